// Package gateway is a small inference gateway that speaks to an Endpoint Picker the way Envoy's
// ext_proc filter does, and the ext_proc client it is built on.
//
// The client sends the exact message sequence Envoy sends for one HTTP request: the request
// headers (with protocol_config on the first message and the endpoint subset in metadata_context),
// the body in chunks, then after the upstream answers, the response headers (with the served
// endpoint in metadata_context) and body. In FULL_DUPLEX_STREAMED mode (what GIE gateways
// configure) it waits for nothing between body chunks and reads the EPP's answer after the end of
// the body; in BUFFERED mode it waits for the headers answer, then sends the whole body at once.
//
// Production runs an Envoy-based gateway (Envoy Gateway, kgateway, Istio, GKE) with the EPP; this
// gateway exists for tests, benchmarks and the local demo (docs/gateways.md).
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Protocol names of GIE's endpoint-picker protocol.
const (
	DestinationHeader = "x-gateway-destination-endpoint"
	LBNamespace       = "envoy.lb"
	SubsetNamespace   = "envoy.lb.subset_hint"
	SubsetKey         = "x-gateway-destination-endpoint-subset"
	ServedKey         = "x-gateway-destination-endpoint-served"
)

// DefaultChunkBytes is the body chunk size the client sends (Envoy forwards what it reads, up to
// its buffer; GIE sizes its own chunks at 62,000 bytes).
const DefaultChunkBytes = 62000

// ErrProtocol means the EPP answered out of protocol.
var ErrProtocol = errors.New("ext_proc protocol violation")

// Client opens one ext_proc stream per HTTP request.
type Client struct {
	EPP extprocv3.ExternalProcessorClient
	// RequestMode and ResponseMode are the body modes of the filter; FULL_DUPLEX_STREAMED when zero
	// (NONE is not supported: the EPP needs the body).
	RequestMode, ResponseMode filterv3.ProcessingMode_BodySendMode
	// ChunkBytes is the request body chunk size; DefaultChunkBytes when zero.
	ChunkBytes int
}

// Header is one request or response header, pseudo-headers (":path") included.
type Header struct{ Key, Value string }

// Immediate is an answer the EPP gave the client directly.
type Immediate struct {
	Status  int
	Headers map[string]string
	Body    []byte
}

// Decision is the EPP's answer for the request.
type Decision struct {
	// Immediate is set when the EPP answered the client itself (400, 429, 503, ...).
	Immediate *Immediate
	// Destinations are the endpoints from the destination header, in order.
	Destinations []string
	// MetadataDestination is the destination from dynamic metadata envoy.lb.
	MetadataDestination string
	// SetHeaders are the header mutations, lower-case keys.
	SetHeaders    map[string]string
	RemoveHeaders []string
	// ClearRouteCache is true when the EPP asked for route re-selection.
	ClearRouteCache bool
	// Body is the body to forward upstream.
	Body []byte
}

// Call is one request's ext_proc stream.
type Call struct {
	stream     extprocv3.ExternalProcessor_ProcessClient
	cancel     context.CancelFunc
	duplexResp bool
	// ResponseSet are the headers the EPP set on the response (its answer to the response
	// headers), which the gateway applies to the response its client gets, as Envoy does.
	ResponseSet map[string]string
}

func (c *Client) modes() (filterv3.ProcessingMode_BodySendMode, filterv3.ProcessingMode_BodySendMode) {
	req, resp := c.RequestMode, c.ResponseMode
	if req == filterv3.ProcessingMode_NONE {
		req = filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
	}
	if resp == filterv3.ProcessingMode_NONE {
		resp = filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
	}
	return req, resp
}

// Request runs the request phase. subset, when non-nil, is the endpoint subset hint. The Call
// must be closed.
func (c *Client) Request(ctx context.Context, headers []Header, body []byte, subset []string) (*Call, *Decision, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.EPP.Process(ctx)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("open ext_proc stream: %w", err)
	}
	reqMode, respMode := c.modes()
	call := &Call{stream: stream, cancel: cancel, duplexResp: respMode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED}
	first := &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: headerMap(headers), EndOfStream: len(body) == 0,
		}},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: reqMode, ResponseBodyMode: respMode},
	}
	if subset != nil {
		first.MetadataContext = subsetMetadata(subset)
	}
	if err := stream.Send(first); err != nil {
		call.Close()
		return nil, nil, fmt.Errorf("send request headers: %w", err)
	}
	d := &Decision{Body: body, SetHeaders: map[string]string{}}
	if len(body) > 0 {
		var err error
		if reqMode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED {
			err = c.duplexRequest(stream, body, d)
		} else {
			err = c.bufferedRequest(stream, body, d)
		}
		if err != nil {
			call.Close()
			return nil, nil, err
		}
		return call, d, nil
	}
	resp, err := stream.Recv()
	if err != nil {
		call.Close()
		return nil, nil, fmt.Errorf("await headers answer: %w", err)
	}
	if err := d.apply(resp); err != nil {
		call.Close()
		return nil, nil, err
	}
	return call, d, nil
}

func (c *Client) duplexRequest(stream extprocv3.ExternalProcessor_ProcessClient, body []byte, d *Decision) error {
	size := c.ChunkBytes
	if size <= 0 {
		size = DefaultChunkBytes
	}
	for i := 0; i < len(body); i += size {
		end := min(i+size, len(body))
		err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
			RequestBody: &extprocv3.HttpBody{Body: body[i:end], EndOfStream: end == len(body)},
		}})
		if err == io.EOF {
			break // the EPP answered early (an immediate response); read it below
		}
		if err != nil {
			return fmt.Errorf("send request body: %w", err)
		}
	}
	// The answer: an immediate response, or the headers answer then the body in pieces.
	var newBody []byte
	for {
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("await EPP answer: %w", err)
		}
		if err := d.apply(resp); err != nil {
			return err
		}
		if d.Immediate != nil {
			return nil
		}
		rb := resp.GetRequestBody()
		if rb == nil {
			continue
		}
		sr := rb.GetResponse().GetBodyMutation().GetStreamedResponse()
		if sr == nil {
			return fmt.Errorf("%w: request body answer without a streamed body in FULL_DUPLEX_STREAMED mode", ErrProtocol)
		}
		newBody = append(newBody, sr.GetBody()...)
		if sr.GetEndOfStream() {
			d.Body = newBody
			return nil
		}
	}
}

func (c *Client) bufferedRequest(stream extprocv3.ExternalProcessor_ProcessClient, body []byte, d *Decision) error {
	resp, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("await headers answer: %w", err)
	}
	if err := d.apply(resp); err != nil || d.Immediate != nil {
		return err
	}
	if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: true},
	}}); err != nil {
		return fmt.Errorf("send request body: %w", err)
	}
	resp, err = stream.Recv()
	if err != nil {
		return fmt.Errorf("await body answer: %w", err)
	}
	if err := d.apply(resp); err != nil || d.Immediate != nil {
		return err
	}
	if b := resp.GetRequestBody().GetResponse().GetBodyMutation(); b != nil {
		switch {
		case b.GetClearBody():
			d.Body = nil
		case b.GetBody() != nil:
			d.Body = b.GetBody()
		}
	}
	return nil
}

// apply takes in one answer of the request phase.
func (d *Decision) apply(resp *extprocv3.ProcessingResponse) error {
	if ir := resp.GetImmediateResponse(); ir != nil {
		im := &Immediate{Status: int(ir.GetStatus().GetCode()), Headers: map[string]string{}, Body: ir.GetBody()}
		for _, h := range ir.GetHeaders().GetSetHeaders() {
			im.Headers[strings.ToLower(h.GetHeader().GetKey())] = headerValue(h.GetHeader())
		}
		d.Immediate = im
		return nil
	}
	var common *extprocv3.CommonResponse
	switch r := resp.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		common = r.RequestHeaders.GetResponse()
	case *extprocv3.ProcessingResponse_RequestBody:
		common = r.RequestBody.GetResponse()
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return nil
	default:
		return fmt.Errorf("%w: unexpected %T in the request phase", ErrProtocol, r)
	}
	for _, h := range common.GetHeaderMutation().GetSetHeaders() {
		k := strings.ToLower(h.GetHeader().GetKey())
		v := headerValue(h.GetHeader())
		d.SetHeaders[k] = v
		if k == DestinationHeader {
			d.Destinations = nil
			for _, e := range strings.Split(v, ",") {
				if e = strings.TrimSpace(e); e != "" {
					d.Destinations = append(d.Destinations, e)
				}
			}
		}
	}
	d.RemoveHeaders = append(d.RemoveHeaders, common.GetHeaderMutation().GetRemoveHeaders()...)
	if common.GetClearRouteCache() {
		d.ClearRouteCache = true
	}
	if md := resp.GetDynamicMetadata().GetFields()[LBNamespace]; md != nil {
		d.MetadataDestination = md.GetStructValue().GetFields()[DestinationHeader].GetStringValue()
	}
	return nil
}

// ResponseHeaders sends the upstream's response headers and waits for the EPP's answer.
func (call *Call) ResponseHeaders(status int, h http.Header, served string, endOfStream bool) error {
	hs := []Header{{":status", strconv.Itoa(status)}}
	for k, vs := range h {
		for _, v := range vs {
			hs = append(hs, Header{strings.ToLower(k), v})
		}
	}
	req := &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: headerMap(hs), EndOfStream: endOfStream}},
		MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			LBNamespace: {Fields: map[string]*structpb.Value{ServedKey: structpb.NewStringValue(served)}},
		}},
	}
	if err := call.stream.Send(req); err != nil {
		return fmt.Errorf("send response headers: %w", err)
	}
	resp, err := call.stream.Recv()
	if err != nil {
		return fmt.Errorf("await response headers answer: %w", err)
	}
	if resp.GetResponseHeaders() == nil {
		return fmt.Errorf("%w: %T answers response headers", ErrProtocol, resp.GetResponse())
	}
	for _, h := range resp.GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
		if call.ResponseSet == nil {
			call.ResponseSet = map[string]string{}
		}
		call.ResponseSet[strings.ToLower(h.GetHeader().GetKey())] = headerValue(h.GetHeader())
	}
	return nil
}

// SendResponseBody sends one chunk of the upstream's response body.
func (call *Call) SendResponseBody(chunk []byte, eos bool) error {
	err := call.stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: chunk, EndOfStream: eos},
	}})
	if err != nil {
		return fmt.Errorf("send response body: %w", err)
	}
	return nil
}

// RecvResponseBody returns the next piece of response body the EPP lets through. In
// FULL_DUPLEX_STREAMED mode that is the EPP's streamed body; in the other modes the EPP only
// acknowledges, and sent (the chunk that was sent) passes unchanged.
func (call *Call) RecvResponseBody(sent []byte, sentEOS bool) (piece []byte, eos bool, err error) {
	resp, err := call.stream.Recv()
	if err != nil {
		return nil, false, fmt.Errorf("await response body answer: %w", err)
	}
	rb := resp.GetResponseBody()
	if rb == nil {
		return nil, false, fmt.Errorf("%w: %T answers response body", ErrProtocol, resp.GetResponse())
	}
	if !call.duplexResp {
		if b := rb.GetResponse().GetBodyMutation().GetBody(); b != nil {
			return b, sentEOS, nil
		}
		return sent, sentEOS, nil
	}
	sr := rb.GetResponse().GetBodyMutation().GetStreamedResponse()
	if sr == nil {
		return nil, false, fmt.Errorf("%w: response body answer without a streamed body", ErrProtocol)
	}
	return sr.GetBody(), sr.GetEndOfStream(), nil
}

// Duplex reports whether response bodies stream through the EPP.
func (call *Call) Duplex() bool { return call.duplexResp }

// Close ends the stream.
func (call *Call) Close() {
	_ = call.stream.CloseSend()
	call.cancel()
}

func headerMap(hs []Header) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for _, h := range hs {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: h.Key, RawValue: []byte(h.Value)})
	}
	return m
}

func headerValue(h *corev3.HeaderValue) string {
	if len(h.GetRawValue()) > 0 {
		return string(h.GetRawValue())
	}
	return h.GetValue()
}

func subsetMetadata(subset []string) *corev3.Metadata {
	vals := make([]*structpb.Value, len(subset))
	for i, s := range subset {
		vals[i] = structpb.NewStringValue(s)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		SubsetNamespace: {Fields: map[string]*structpb.Value{SubsetKey: structpb.NewListValue(&structpb.ListValue{Values: vals})}},
	}}
}
