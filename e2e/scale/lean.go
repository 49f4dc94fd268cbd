package scale

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// A simulated spoke reads the hub's messages leanly: it takes each SyncResponse's bytes off the
// stream and picks out the few fields it acts on (the cursor, the flags, the pools of the
// imports, each capacity report's observed_at) without decoding the rest. A thousand spokes
// that decoded every capacity entry of every update would take a third of this machine's CPU
// from the hub under test; what the hub sends, and how it is framed and encrypted, is the same.

// leanCodec marshals what a spoke sends as protobuf and hands what it receives as bytes when
// asked for a *rawMessage (as protobuf otherwise).
type leanCodec struct{}

func (leanCodec) Name() string { return "proto" }

func (leanCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("lean codec: cannot marshal %T", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (leanCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch v := v.(type) {
	case *rawMessage:
		v.b = v.b[:0]
		for _, buf := range data {
			v.b = append(v.b, buf.ReadOnlyData()...)
		}
		return nil
	case proto.Message:
		return proto.Unmarshal(data.Materialize(), v)
	default:
		return fmt.Errorf("lean codec: cannot unmarshal into %T", v)
	}
}

// rawMessage is a received message's bytes; its buffer is reused from message to message.
type rawMessage struct{ b []byte }

// Fields of the messages a simulated spoke reads (proto/spillway/v1).
const (
	respWelcome   = 1 // SyncResponse.welcome
	respExportAck = 2 // SyncResponse.export_ack
	respView      = 3 // SyncResponse.view

	viewCursor         = 1
	viewSnapshot       = 2
	viewImports        = 3
	viewImportsRemoved = 4
	viewCapacity       = 6
	viewIncomplete     = 8
	viewMore           = 9

	importPool         = 1 // Import.pool
	remoteCapacity     = 2 // RemoteCapacity.capacity
	capacityObservedAt = 12
	ackSeq             = 1 // ExportAck.seq
)

// viewPart is what a simulated spoke takes from one part of a view update.
type viewPart struct {
	cursor                     *pb.ViewCursor
	snapshot, incomplete, more bool
	imports, removed           []*pb.PoolRef
	// stamps are the observed_at of its capacity reports.
	stamps []time.Time
}

// scanResponse reads one SyncResponse: the welcome, an export ack's seq, or a view part, with
// its capacity reports' stamps when stamps is true.
func scanResponse(b []byte, stamps bool) (welcome *pb.Welcome, ack uint64, isAck bool, view *viewPart, err error) {
	err = fields(b, func(n protowire.Number, v []byte) error {
		switch n {
		case respWelcome:
			welcome = &pb.Welcome{}
			return proto.Unmarshal(v, welcome)
		case respExportAck:
			isAck = true
			return fields(v, func(n protowire.Number, v []byte) error {
				if n == ackSeq {
					ack = decodeVarint(v)
				}
				return nil
			})
		case respView:
			view = &viewPart{}
			return scanView(v, view, stamps)
		}
		return nil
	})
	return welcome, ack, isAck, view, err
}

func scanView(b []byte, p *viewPart, stamps bool) error {
	return fields(b, func(n protowire.Number, v []byte) error {
		switch n {
		case viewCursor:
			p.cursor = &pb.ViewCursor{}
			return proto.Unmarshal(v, p.cursor)
		case viewSnapshot:
			p.snapshot = decodeVarint(v) != 0
		case viewIncomplete:
			p.incomplete = decodeVarint(v) != 0
		case viewMore:
			p.more = decodeVarint(v) != 0
		case viewImports:
			return fields(v, func(n protowire.Number, v []byte) error {
				if n == importPool {
					ref := &pb.PoolRef{}
					p.imports = append(p.imports, ref)
					return proto.Unmarshal(v, ref)
				}
				return nil
			})
		case viewImportsRemoved:
			ref := &pb.PoolRef{}
			p.removed = append(p.removed, ref)
			return proto.Unmarshal(v, ref)
		case viewCapacity:
			if !stamps {
				return nil
			}
			return fields(v, func(n protowire.Number, v []byte) error {
				if n != remoteCapacity {
					return nil
				}
				return fields(v, func(n protowire.Number, v []byte) error {
					if n != capacityObservedAt {
						return nil
					}
					t, err := decodeTimestamp(v)
					p.stamps = append(p.stamps, t)
					return err
				})
			})
		}
		return nil
	})
}

// fields calls f with each field of the message b: its number and, for a varint, the varint's
// bytes, for a length-delimited field its contents. Other wire types are skipped.
func fields(b []byte, f func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return protowire.ParseError(l)
		}
		b = b[l:]
		var v []byte
		switch typ {
		case protowire.VarintType:
			_, l = protowire.ConsumeVarint(b)
			if l >= 0 {
				v = b[:l]
			}
		case protowire.BytesType:
			v, l = protowire.ConsumeBytes(b)
		default:
			l = protowire.ConsumeFieldValue(n, typ, b)
		}
		if l < 0 {
			return protowire.ParseError(l)
		}
		b = b[l:]
		if v != nil || typ == protowire.BytesType {
			if err := f(n, v); err != nil {
				return err
			}
		}
	}
	return nil
}

func decodeVarint(b []byte) uint64 {
	v, _ := protowire.ConsumeVarint(b)
	return v
}

// decodeTimestamp reads a google.protobuf.Timestamp.
func decodeTimestamp(b []byte) (time.Time, error) {
	var sec, nsec int64
	err := fields(b, func(n protowire.Number, v []byte) error {
		switch n {
		case 1:
			sec = int64(decodeVarint(v))
		case 2:
			nsec = int64(int32(decodeVarint(v)))
		}
		return nil
	})
	if err != nil {
		return time.Time{}, err
	}
	if sec == 0 && nsec == 0 {
		return time.Time{}, errors.New("observed_at missing")
	}
	return time.Unix(sec, nsec), nil
}
