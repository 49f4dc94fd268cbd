package affinity

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The wire format of one message (a UDP packet on the replica ring, or the join snapshot):
//
//	version byte (1)
//	then groups, each: uvarint endpoint length (1..maxEndpointLen), the endpoint,
//	                   uvarint count (≥ 1), count block hashes of 8 bytes, little-endian
//
// A group's hashes are in the order the sender's index recorded them (a prompt's blocks in
// order, oldest pick first), so the receiver's LRU ends up in the same order.
const (
	wireVersion    = 1
	maxEndpointLen = 256
)

// ErrMalformed means a message from the replica ring could not be read.
var ErrMalformed = errors.New("malformed prefix-affinity message")

// group is one endpoint's hashes in a message; endpoint aliases the message's bytes.
type group struct {
	endpoint []byte
	hashes   []uint64
}

// decode calls fn for every group of msg, with hashes decoded into the reused *buf (fn must not
// keep them). It reads the whole message before calling fn, so a malformed message applies
// nothing.
func decode(msg []byte, buf *[]uint64, fn func(group)) error {
	if err := walk(msg, nil, nil); err != nil {
		return err
	}
	return walk(msg, buf, fn)
}

func walk(msg []byte, buf *[]uint64, fn func(group)) error {
	if len(msg) == 0 || msg[0] != wireVersion {
		return fmt.Errorf("%w: unknown version", ErrMalformed)
	}
	for p := msg[1:]; len(p) > 0; {
		n, k := binary.Uvarint(p)
		if k <= 0 || n == 0 || n > maxEndpointLen || uint64(len(p)-k) < n {
			return fmt.Errorf("%w: bad endpoint", ErrMalformed)
		}
		ep := p[k : k+int(n)]
		p = p[k+int(n):]
		c, k := binary.Uvarint(p)
		if k <= 0 || c == 0 || c > uint64(len(p)-k)/8 {
			return fmt.Errorf("%w: bad block count", ErrMalformed)
		}
		p = p[k:]
		if fn != nil {
			hashes := (*buf)[:0]
			for i := range int(c) {
				hashes = append(hashes, binary.LittleEndian.Uint64(p[8*i:]))
			}
			*buf = hashes
			fn(group{endpoint: ep, hashes: hashes})
		}
		p = p[8*c:]
	}
	return nil
}

// packer cuts a run of records into messages of at most max bytes.
type packer struct {
	max  int
	msg  []byte
	last string // endpoint of the open group, "" when none
	// countAt is where the open group's count is; counts take two bytes (uvarint, ≤ 16,383
	// hashes, more than a message holds) so that a group can grow in place.
	countAt int
	count   int
}

// reset starts an empty message.
func (p *packer) reset() {
	p.msg = append(p.msg[:0], wireVersion)
	p.last, p.count = "", 0
}

// add appends one record; it returns false, adding nothing, when the message is full.
func (p *packer) add(endpoint string, h uint64) bool {
	if endpoint != p.last || p.count == 1<<14-1 {
		hdr := uvarintLen(uint64(len(endpoint))) + len(endpoint) + 2
		if len(p.msg)+hdr+8 > p.max {
			return false
		}
		p.msg = binary.AppendUvarint(p.msg, uint64(len(endpoint)))
		p.msg = append(p.msg, endpoint...)
		p.countAt = len(p.msg)
		p.msg = append(p.msg, 0x80, 0) // count 0 in two bytes
		p.last, p.count = endpoint, 0
	} else if len(p.msg)+8 > p.max {
		return false
	}
	p.msg = binary.LittleEndian.AppendUint64(p.msg, h)
	p.count++
	p.msg[p.countAt] = byte(p.count&0x7f) | 0x80
	p.msg[p.countAt+1] = byte(p.count >> 7)
	return true
}

// empty reports whether the message holds no record.
func (p *packer) empty() bool { return len(p.msg) <= 1 }

func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}
