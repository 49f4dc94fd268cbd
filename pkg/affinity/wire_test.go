package affinity

import (
	"fmt"
	"slices"
	"testing"
)

type flat struct {
	endpoint string
	hash     uint64
}

func decodeAll(t testing.TB, msg []byte) ([]flat, error) {
	var out []flat
	var buf []uint64
	err := decode(msg, &buf, func(g group) {
		for _, h := range g.hashes {
			out = append(out, flat{string(g.endpoint), h})
		}
	})
	return out, err
}

// TestPackerCutsMessages: records packed into messages of a bounded size decode to the same
// records in the same order, each message within the bound, and a group holds more than one
// count byte's worth.
func TestPackerCutsMessages(t *testing.T) {
	var in []flat
	for i := range 1000 {
		in = append(in, flat{fmt.Sprintf("10.0.0.%d:8000", i/300), uint64(i) * 0x9E3779B97F4A7C15})
	}
	p := &packer{max: 300}
	p.reset()
	var got []flat
	msgs := 0
	flush := func() {
		if len(p.msg) > 300 {
			t.Fatalf("message of %d bytes", len(p.msg))
		}
		out, err := decodeAll(t, p.msg)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, out...)
		msgs++
		p.reset()
	}
	for _, r := range in {
		if !p.add(r.endpoint, r.hash) {
			flush()
			if !p.add(r.endpoint, r.hash) {
				t.Fatal("an empty message refused a record")
			}
		}
	}
	flush()
	if !slices.Equal(got, in) {
		t.Fatalf("decoded %d records, sent %d (or in another order)", len(got), len(in))
	}
	big := &packer{max: 1 << 20}
	big.reset()
	for i := range 20000 {
		big.add("e", uint64(i))
	}
	if out, err := decodeAll(t, big.msg); err != nil || len(out) != 20000 || out[19999].hash != 19999 {
		t.Fatalf("a group past 16,383 hashes: %d records, %v", len(out), err)
	}
}

func TestDecodeRefusesMalformed(t *testing.T) {
	for name, msg := range map[string][]byte{
		"empty":          {},
		"version":        {2, 1, 'e', 1, 0, 0, 0, 0, 0, 0, 0, 0},
		"no endpoint":    {1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
		"long endpoint":  append([]byte{1, 0x81, 0x02}, make([]byte, 300)...),
		"zero hashes":    {1, 1, 'e', 0},
		"short hashes":   {1, 1, 'e', 2, 0, 0, 0, 0, 0, 0, 0, 0},
		"cut endpoint":   {1, 5, 'e'},
		"trailing bytes": {1, 1, 'e', 1, 0, 0, 0, 0, 0, 0, 0, 0, 1},
	} {
		applied := 0
		var buf []uint64
		if err := decode(msg, &buf, func(group) { applied++ }); err == nil || applied != 0 {
			t.Errorf("%s: err %v, %d groups applied", name, err, applied)
		}
	}
}

func TestQueueDropsOldest(t *testing.T) {
	q := newQueue(4)
	if d, empty := q.push("a", []uint64{1, 2, 3}); d != 0 || !empty {
		t.Fatalf("push: dropped %d, was empty %v", d, empty)
	}
	if d, empty := q.push("b", []uint64{4, 5, 6}); d != 2 || empty {
		t.Fatalf("push into a full queue: dropped %d, was empty %v", d, empty)
	}
	buf := make([]record, 3)
	if k := q.pop(buf); k != 3 || buf[0] != (record{"a", 3}) || buf[2] != (record{"b", 5}) {
		t.Fatalf("pop %d: %v", k, buf)
	}
	if d, _ := q.push("c", []uint64{7, 8, 9, 10, 11, 12}); d != 3 {
		t.Fatalf("a push larger than the queue dropped %d, want the 1 queued and 2 of its own", d)
	}
	if k := q.pop(buf); k != 3 || buf[0] != (record{"c", 9}) {
		t.Fatalf("pop %d: %v", k, buf)
	}
	q.pop(buf)
	if _, empty := q.push("d", []uint64{13}); !empty {
		t.Fatal("a drained queue was not empty")
	}
}

// FuzzDecode: any message from the ring either decodes, and then packs again into the same
// records, or is refused; nothing panics.
func FuzzDecode(f *testing.F) {
	p := &packer{max: 1200}
	p.reset()
	p.add("10.0.0.1:8000", 1)
	p.add("10.0.0.1:8000", 2)
	p.add("10.0.0.2:8000", 3)
	f.Add(p.msg)
	f.Add([]byte{1, 1, 'e', 0x80, 0, 0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		got, err := decodeAll(t, msg)
		if err != nil {
			return
		}
		q := &packer{max: 1 << 30}
		q.reset()
		for _, r := range got {
			q.add(r.endpoint, r.hash)
		}
		again, err := decodeAll(t, q.msg)
		if err != nil || !slices.Equal(again, got) {
			t.Fatalf("re-packed %d records to %d (%v)", len(got), len(again), err)
		}
	})
}
