package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// TestNetwork: the fault helpers do what they say on real namespaces: a partition stops new
// connections in the directions it names, Heal restores them, and random loss drops about its
// share of the packets (by nftables' own counters).
func TestNetwork(t *testing.T) {
	if why := enabled(); why != "" {
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := NewNetwork(ctx, fmt.Sprintf("spn%d", os.Getpid()%100000), []Node{{"a", "10.79.9.1"}, {"b", "10.79.9.2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	l, err := inNS(n.NS("b"), func() (net.Listener, error) { return net.Listen("tcp", "10.79.9.2:9000") })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dial := func() error {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		c, err := n.Dialer("a")(ctx, "tcp", "10.79.9.2:9000")
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatalf("a cannot reach b before any fault: %v", err)
	}
	for _, d := range []Direction{Both, Inbound, Outbound} {
		if err := n.Partition(ctx, "a", []string{"10.79.9.2"}, d); err != nil {
			t.Fatal(err)
		}
		if err := dial(); err == nil {
			t.Errorf("direction %d: a still reaches b", d)
		}
		if err := n.Heal(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if err := dial(); err != nil {
			t.Errorf("direction %d: a does not reach b after Heal: %v", d, err)
		}
	}
	// Loss: 30 % of the datagrams b receives are dropped.
	if err := n.Loss(ctx, "b", 30, ""); err != nil {
		t.Fatal(err)
	}
	pc, err := n.ListenPacket("b", "10.79.9.2:9001")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := n.Dialer("a")(ctx, "udp", "10.79.9.2:9001")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const sent = 1000
	counted := make(chan int)
	go func() {
		got := 0
		buf := make([]byte, 16)
		for {
			_ = pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if _, _, err := pc.ReadFrom(buf); err != nil {
				counted <- got
				return
			}
			got++
		}
	}()
	for i := range sent {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Microsecond) // a pace the receiver keeps up with: only the rule drops
	}
	got := <-counted
	loss := 1 - float64(got)/sent
	t.Logf("30%% loss rule: %d of %d datagrams arrived (%.1f%% lost)", got, sent, 100*loss)
	if loss < 0.22 || loss > 0.38 {
		t.Errorf("loss %.2f, want about 0.30", loss)
	}
}
