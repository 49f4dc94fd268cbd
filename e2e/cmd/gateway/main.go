// Command gateway is a small inference gateway: it asks an Endpoint Picker over ext_proc, as
// Envoy does, where each request goes, and proxies it there, trying the fallbacks in order.
// Production uses an Envoy-based gateway; see docs/gateways.md.
package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/pkg/cli"
	"github.com/spillway-io/spillway/pkg/serve"
)

func main() { cli.Main(newCommand()) }

func newCommand() *cobra.Command {
	var listen, eppAddr, mode string
	cmd := &cobra.Command{
		Use:          "gateway --listen HOST:PORT --epp HOST:PORT",
		Short:        "An HTTP inference gateway that routes through an Endpoint Picker",
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var reqMode filterv3.ProcessingMode_BodySendMode
			switch mode {
			case "full-duplex":
				reqMode = filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
			case "buffered":
				reqMode = filterv3.ProcessingMode_BUFFERED
			default:
				return fmt.Errorf("--body-mode %q: want full-duplex or buffered", mode)
			}
			conn, err := grpc.NewClient(eppAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return fmt.Errorf("--epp %q: %w", eppAddr, err)
			}
			defer conn.Close()
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen --listen: %w", err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			h := gateway.NewHandler(gateway.Options{
				Client: &gateway.Client{EPP: extprocv3.NewExternalProcessorClient(conn), RequestMode: reqMode},
				Logger: log,
			})
			log.Info("gateway started", "component", "gateway", "listen", l.Addr().String(), "epp", eppAddr)
			return serve.HTTP(cmd.Context(), l, h)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", ":8080", "host:port to serve HTTP on")
	cmd.Flags().StringVar(&eppAddr, "epp", "127.0.0.1:9002", "host:port of the Endpoint Picker")
	cmd.Flags().StringVar(&mode, "body-mode", "full-duplex", "request body mode of the ext_proc exchange: full-duplex or buffered")
	return cmd
}
