package gossip

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/spillway-io/spillway/e2e/testkit"
)

func TestFlagsValidate(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // substrings of the error; none when valid
	}{
		{"gossip off", nil, nil},
		{"a key", []string{"--gossip-address", "127.0.0.1:7946", "--gossip-key-file", "key"}, nil},
		{"no key", []string{"--gossip-address", "127.0.0.1:7946"}, []string{"--gossip-key-file is required", "--gossip-insecure"}},
		{"no key, insecure", []string{"--gossip-address", "127.0.0.1:7946", "--gossip-insecure"}, nil},
		{"a key and insecure: the key is used", []string{"--gossip-address", "127.0.0.1:7946", "--gossip-key-file", "key", "--gossip-insecure"}, nil},
		{"insecure does not excuse a bad address", []string{"--gossip-address", "nope", "--gossip-insecure"}, []string{`--gossip-address "nope"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Flags
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			f.AddFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := f.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error naming %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

// syncBuffer is a log sink the member's goroutines may write to while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const insecureWarning = "gossip is not encrypted"

// TestInsecureGossipWarnsAndWorks: without a key and with --gossip-insecure two members gossip in
// plaintext, and each says so with a warning at start; a member with a key does not warn.
func TestInsecureGossipWarnsAndWorks(t *testing.T) {
	defer settled(t)()
	var logs [2]*syncBuffer
	var members []*Member
	// The members stop one after the other, the last first: one that left is not probed by the
	// other, whose probe would otherwise outlive its Shutdown (memberlist does not wait for it).
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()
	for i := range 2 {
		logs[i] = &syncBuffer{}
		var join []string
		if i > 0 {
			join = []string{members[0].ml.LocalNode().Address()}
		}
		f := Flags{Address: "127.0.0.1:0", Join: join, Insecure: true}
		if err := f.Validate(); err != nil {
			t.Fatal(err)
		}
		m, err := f.Start(fmt.Sprintf("plain-%d", i), slog.New(slog.NewTextHandler(logs[i], &slog.HandlerOptions{Level: slog.LevelWarn})), nil)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, m)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = m.Run(ctx) }()
		stops = append(stops, func() { cancel(); <-done })
	}
	for i, l := range logs {
		if !strings.Contains(l.String(), "level=WARN") || !strings.Contains(l.String(), insecureWarning) {
			t.Errorf("member %d logged %q at start, want a warning that gossip is not encrypted", i, l.String())
		}
	}
	testkit.Eventually(t, 10*time.Second, "the plaintext members see each other", func() error {
		if got := members[1].Alive(); len(got) != 2 {
			return fmt.Errorf("plain-1 sees %v", got)
		}
		return nil
	})

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := writeFile(keyFile, base64.StdEncoding.EncodeToString(key)); err != nil {
		t.Fatal(err)
	}
	var withKey syncBuffer
	f := Flags{Address: "127.0.0.1:0", KeyFile: keyFile, Insecure: true}
	m, err := f.Start("encrypted", slog.New(slog.NewTextHandler(&withKey, &slog.HandlerOptions{Level: slog.LevelWarn})), nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if strings.Contains(withKey.String(), insecureWarning) {
		t.Errorf("a member with a key warned %q", withKey.String())
	}
}
