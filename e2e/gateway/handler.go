package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// Options configure a Handler.
type Options struct {
	Client *Client
	// MaxBodyBytes bounds a request body the gateway reads; 16 MiB when zero.
	MaxBodyBytes int64
	// Transport reaches the model servers; a keep-alive transport when nil.
	Transport http.RoundTripper
	// Logger logs at debug level per request. When the EPP cannot be reached the gateway answers
	// 503 (fail closed).
	Logger *slog.Logger
}

// Handler is the gateway: every request goes through the EPP, then to the endpoint it picked,
// trying the fallbacks in order when an endpoint cannot be reached.
type Handler struct {
	client    *Client
	maxBody   int64
	transport http.RoundTripper
	log       *slog.Logger
}

// hopHeaders are not forwarded.
var hopHeaders = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true,
	"te": true, "trailer": true, "upgrade": true, "content-length": true,
}

// NewHandler returns the gateway handler.
func NewHandler(o Options) *Handler {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 16 << 20
	}
	if o.Transport == nil {
		o.Transport = &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{client: o.Client, maxBody: o.MaxBodyBytes, transport: o.Transport, log: o.Logger.With("component", "gateway")}
}

// ServeHTTP routes one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, h.maxBody+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "cannot read request body: "+err.Error())
		return
	}
	if int64(len(body)) > h.maxBody {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", h.maxBody))
		return
	}
	headers := []Header{{":method", r.Method}, {":path", r.URL.RequestURI()}, {":authority", r.Host}, {":scheme", "http"}}
	for k, vs := range r.Header {
		if hopHeaders[strings.ToLower(k)] {
			continue
		}
		for _, v := range vs {
			headers = append(headers, Header{strings.ToLower(k), v})
		}
	}
	call, d, err := h.client.Request(r.Context(), headers, body, nil)
	if err != nil {
		h.log.Warn("endpoint picker failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "endpoint picker unavailable")
		return
	}
	defer call.Close()
	if im := d.Immediate; im != nil {
		for k, v := range im.Headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(im.Status)
		_, _ = w.Write(im.Body)
		return
	}
	if len(d.Destinations) == 0 {
		writeError(w, http.StatusServiceUnavailable, "endpoint picker chose no endpoint")
		return
	}
	var resp *http.Response
	var served string
	for _, dest := range d.Destinations {
		resp, err = h.forward(r, dest, headers, d)
		if err == nil {
			served = dest
			break
		}
		h.log.Debug("endpoint unreachable, trying the next", "endpoint", dest, "err", err)
	}
	if resp == nil {
		writeError(w, http.StatusServiceUnavailable, "no picked endpoint could be reached")
		return
	}
	defer resp.Body.Close()
	if err := h.respond(r.Context(), w, call, resp, served); err != nil {
		h.log.Debug("response relay ended", "err", err)
	}
}

func (h *Handler) forward(r *http.Request, dest string, headers []Header, d *Decision) (*http.Response, error) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+dest+r.URL.RequestURI(), bytes.NewReader(d.Body))
	if err != nil {
		return nil, err
	}
	removed := map[string]bool{}
	for _, k := range d.RemoveHeaders {
		removed[strings.ToLower(k)] = true
	}
	for _, hd := range headers {
		if strings.HasPrefix(hd.Key, ":") || removed[hd.Key] {
			continue
		}
		if _, set := d.SetHeaders[hd.Key]; set {
			continue
		}
		req.Header.Add(hd.Key, hd.Value)
	}
	for k, v := range d.SetHeaders {
		if k == "content-length" || strings.HasPrefix(k, ":") {
			continue
		}
		req.Header.Set(k, v)
	}
	req.ContentLength = int64(len(d.Body))
	req.Host = r.Host
	return h.transport.RoundTrip(req)
}

// respond relays the upstream response through the EPP to the client.
func (h *Handler) respond(ctx context.Context, w http.ResponseWriter, call *Call, resp *http.Response, served string) error {
	if err := call.ResponseHeaders(resp.StatusCode, resp.Header, served, false); err != nil {
		return err
	}
	for k, vs := range resp.Header {
		if hopHeaders[strings.ToLower(k)] {
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	for k, v := range call.ResponseSet {
		w.Header().Set(k, v)
	}
	w.Header().Set("x-gateway-destination-endpoint-served", served)
	w.WriteHeader(resp.StatusCode)
	flusher, _ := w.(http.Flusher)

	// The EPP answers each piece; forward what it lets through. In FULL_DUPLEX_STREAMED mode its
	// answers are read concurrently, as Envoy does, so upstream reads never wait for the EPP.
	if !call.Duplex() {
		buf := make([]byte, 32<<10)
		for {
			n, rerr := resp.Body.Read(buf)
			eos := errors.Is(rerr, io.EOF)
			if rerr != nil && !eos {
				return rerr
			}
			if err := call.SendResponseBody(buf[:n], eos); err != nil {
				return err
			}
			piece, _, err := call.RecvResponseBody(buf[:n], eos)
			if err != nil {
				return err
			}
			if _, err := w.Write(piece); err != nil {
				return err
			}
			if flusher != nil {
				flusher.Flush()
			}
			if eos {
				return nil
			}
		}
	}
	relayed := make(chan error, 1)
	go func() {
		for {
			piece, eos, err := call.RecvResponseBody(nil, false)
			if err != nil {
				relayed <- err
				return
			}
			if _, err := w.Write(piece); err != nil {
				relayed <- err
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
			if eos {
				relayed <- nil
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	var sendErr error
	for sendErr == nil {
		n, rerr := resp.Body.Read(buf)
		eos := errors.Is(rerr, io.EOF)
		if rerr != nil && !eos {
			sendErr = rerr
			break
		}
		if n == 0 && !eos {
			continue
		}
		chunk := append([]byte(nil), buf[:n]...)
		if err := call.SendResponseBody(chunk, eos); err != nil {
			sendErr = err
		}
		if eos {
			break
		}
	}
	if sendErr != nil {
		call.Close() // unblocks the relay
		<-relayed
		return sendErr
	}
	select {
	case err := <-relayed:
		return err
	case <-ctx.Done():
		call.Close()
		<-relayed
		return ctx.Err()
	}
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, `{"error":{"message":%q,"type":"gateway_error","code":%d}}`+"\n", msg, code)
}
