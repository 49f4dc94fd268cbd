package faults

import (
	"errors"
	"net"
	"sync"
	"time"
)

// udpDelay forwards the datagrams that reach listen (in node's namespace) to target after a
// delay, and the answers target sends back to their sender after the same delay: the UDP half
// of a slow link, which toxiproxy (TCP only) cannot give. The gossip layer (memberlist) sends
// its probes over UDP to a member's advertised address and its answers to the sender's
// advertised address, so a relay before each member's gossip port delays each direction by the
// receiving member's delay.
type udpDelay struct {
	f      *Fleet
	node   string
	target *net.UDPAddr
	delay  time.Duration
	front  net.PacketConn

	mu     sync.Mutex
	back   map[string]net.PacketConn // by sender
	closed bool
	wg     sync.WaitGroup
}

// StartUDPDelay starts a relay in node's namespace from listen to target.
func (f *Fleet) StartUDPDelay(node, listen, target string, delay time.Duration) (*udpDelay, error) {
	t, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	pc, err := f.Net.ListenPacket(node, listen)
	if err != nil {
		return nil, err
	}
	r := &udpDelay{f: f, node: node, target: t, delay: delay, front: pc, back: map[string]net.PacketConn{}}
	r.wg.Add(1)
	go r.forward()
	return r, nil
}

func (r *udpDelay) forward() {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := r.front.ReadFrom(buf)
		if err != nil {
			return
		}
		back, err := r.backFor(from)
		if err != nil {
			continue
		}
		msg := append([]byte(nil), buf[:n]...)
		time.AfterFunc(r.delay, func() { _, _ = back.WriteTo(msg, r.target) })
	}
}

// backFor returns the socket that sends from's datagrams on to the target, and carries the
// target's answers back to from.
func (r *udpDelay) backFor(from net.Addr) (net.PacketConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("closed")
	}
	if pc, ok := r.back[from.String()]; ok {
		return pc, nil
	}
	pc, err := r.f.Net.ListenPacket(r.node, net.JoinHostPort(r.target.IP.String(), "0"))
	if err != nil {
		return nil, err
	}
	r.back[from.String()] = pc
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			msg := append([]byte(nil), buf[:n]...)
			time.AfterFunc(r.delay, func() { _, _ = r.front.WriteTo(msg, from) })
		}
	}()
	return pc, nil
}

// Close stops the relay.
func (r *udpDelay) Close() {
	r.mu.Lock()
	r.closed = true
	r.front.Close()
	for _, pc := range r.back {
		pc.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
