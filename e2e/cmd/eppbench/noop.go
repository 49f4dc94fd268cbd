package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/e2e/loadgen"
	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/pkg/epp"
)

// noopBaseline is what the transport alone costs: a do-nothing ext_proc server in its own
// process (this binary's hidden noop-server command, with the spoke's gRPC server settings)
// answers the same client, so the client, the kernel and two Go schedulers are in its figure
// just as they are in the EPPs'.
func noopBaseline(ctx context.Context, o options) (float64, float64, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	p, err := localfleet.StartProcEnv(o.workDir, "noop-server", exe, nil, "noop-server", "--listen", noopAddress)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = p.Stop(5 * time.Second) }()
	if err := waitFor(ctx, p, 10*time.Second, func() error { return routes(ctx, noopAddress) }); err != nil {
		return 0, 0, err
	}
	conn, err := grpc.NewClient(noopAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	client := &gateway.Client{EPP: extprocv3.NewExternalProcessorClient(conn)}
	if _, _, err := latencies(ctx, client, 200, 1); err != nil {
		return 0, 0, err
	}
	sw0, err := voluntarySwitches(p.Pid())
	if err != nil {
		return 0, 0, err
	}
	ds, _, err := latencies(ctx, client, o.requests, 1)
	if err != nil {
		return 0, 0, err
	}
	if len(ds) == 0 {
		return 0, 0, errors.New("the do-nothing server answered no request")
	}
	sw1, err := voluntarySwitches(p.Pid())
	if err != nil {
		return 0, 0, fmt.Errorf("do-nothing server's context switches: %w", err)
	}
	p50, blocks := loadgen.Percentile(ds, 0.5), round3(float64(sw1-sw0)/float64(len(ds)))
	fmt.Fprintf(os.Stderr, "   noop     p50 %.3f ms (%.1f thread blocks per request)\n", p50, blocks)
	return p50, blocks, nil
}

// serveNoop runs the do-nothing ext_proc server until ctx ends.
func serveNoop(ctx context.Context, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	gs := grpc.NewServer(epp.GRPCServerOptions(epp.DefaultStreamWorkers)...)
	extprocv3.RegisterExternalProcessorServer(gs, noop{})
	stop := context.AfterFunc(ctx, gs.Stop)
	defer stop()
	return gs.Serve(l)
}

// noop answers a request phase at once: the headers answer, then the body echoed whole.
type noop struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (noop) Process(s extprocv3.ExternalProcessor_ProcessServer) error {
	var body []byte
	for {
		req, err := s.Recv()
		if err != nil {
			return nil
		}
		rb := req.GetRequestBody()
		if rb == nil {
			continue
		}
		body = append(body, rb.GetBody()...)
		if !rb.GetEndOfStream() {
			continue
		}
		if err := s.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}); err != nil {
			return nil
		}
		if err := s.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{
			Response: &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{
				StreamedResponse: &extprocv3.StreamedBodyResponse{Body: body, EndOfStream: true}}}}}}}); err != nil {
			return nil
		}
	}
}
