// Package rttprobe measures the round trip from this cluster to remote clusters' inference
// gateways, as a spilled request sees it. Every period it sends each wanted gateway an HTTP HEAD
// request on a kept-alive connection and times it until the response headers arrive: the data
// path (gateway and its ext_proc call included) through whatever proxies sit between the
// regions, which a TCP connect to a proxy would not measure. The request carries
// epp.ProbeHeader with this cluster's ID, so the remote EPP answers 204 itself and no model
// server sees it.
//
// With Options.TLS the probes use HTTPS, verifying the gateways with that configuration (its
// RootCAs, and ServerName when the gateways are addressed by a name their certificates do not
// carry); without it they use plain HTTP.
//
// The first request of a connection also pays its handshake, so an address's estimate starts
// from its second sample and is an exponentially weighted mean (weight 1/8) after. An address
// nobody asked for within the forget window is no longer probed.
package rttprobe

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/spillway-io/spillway/pkg/epp"
)

// Defaults of Options.
const (
	DefaultPeriod = time.Second
	DefaultForget = time.Minute
)

// userAgent names the prober in the remote gateway's logs.
const userAgent = "spillway-spoke-rtt"

// Options configure a Prober.
type Options struct {
	// Self is this cluster's ID, sent in epp.ProbeHeader.
	Self string
	// Period is the time between probe rounds and each probe's timeout; zero means
	// DefaultPeriod.
	Period time.Duration
	// Forget is how long an address stays probed after it was last asked for; zero means
	// DefaultForget.
	Forget time.Duration
	// Now is the clock that times probes and ages addresses; nil means time.Now.
	Now func() time.Time
	// TLS, when set, makes the probes HTTPS with this client configuration (the remote
	// gateways' CA bundle in RootCAs); nil probes with plain HTTP.
	TLS *tls.Config
}

// Prober keeps the RTT estimates of the addresses it is asked for.
type Prober struct {
	self   string
	period time.Duration
	forget time.Duration
	now    func() time.Time
	scheme string
	client *http.Client

	mu   sync.Mutex
	rtts map[string]*estimate
}

type estimate struct {
	rtt     time.Duration
	wanted  time.Time
	samples int
}

// New returns a prober; Run probes.
func New(o Options) *Prober {
	p := &Prober{self: o.Self, period: o.Period, forget: o.Forget, now: o.Now, scheme: "http", rtts: map[string]*estimate{}}
	if p.period <= 0 {
		p.period = DefaultPeriod
	}
	if p.forget <= 0 {
		p.forget = DefaultForget
	}
	if p.now == nil {
		p.now = time.Now
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute, DisableCompression: true}
	if o.TLS != nil {
		p.scheme = "https"
		tr.TLSClientConfig = o.TLS.Clone()
	}
	p.client = &http.Client{Timeout: p.period, Transport: tr}
	return p
}

// Observe returns the address's RTT estimate (0 until measured) and keeps it probed.
func (p *Prober) Observe(addr string) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.rtts[addr]
	if !ok {
		e = &estimate{}
		p.rtts[addr] = e
	}
	e.wanted = p.now()
	return e.rtt
}

// Run probes every period until ctx ends.
func (p *Prober) Run(ctx context.Context) error {
	tick := time.NewTicker(p.period)
	defer tick.Stop()
	defer p.client.CloseIdleConnections()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			p.round(ctx)
		}
	}
}

// round forgets the addresses nobody asked for lately and probes the others once.
func (p *Prober) round(ctx context.Context) {
	for _, a := range p.wanted() {
		rtt, err := p.probe(ctx, a)
		if err != nil {
			continue // unreachable: liveness and freshness take it out, not the RTT
		}
		p.record(a, rtt)
	}
}

// wanted drops the addresses not asked for within the forget window and returns the others.
func (p *Prober) wanted() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	var addrs []string
	for a, e := range p.rtts {
		if now.Sub(e.wanted) > p.forget {
			delete(p.rtts, a)
			continue
		}
		addrs = append(addrs, a)
	}
	return addrs
}

// record folds one sample into the address's estimate.
func (p *Prober) record(addr string, rtt time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.rtts[addr]
	if !ok {
		return
	}
	switch e.samples++; e.samples {
	case 1: // the connection's first request also paid its handshake
	case 2:
		e.rtt = rtt
	default:
		e.rtt = (e.rtt*7 + rtt) / 8
	}
}

// probe times one HEAD request to addr.
func (p *Prober) probe(ctx context.Context, addr string) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, p.scheme+"://"+addr+"/", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(epp.ProbeHeader, p.self) // the remote EPP answers it itself: no model server is asked
	start := p.now()
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	rtt := p.now().Sub(start)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return rtt, nil
}
