// Command gateway is a small inference gateway: it asks an Endpoint Picker over ext_proc, as
// Envoy does, where each request goes, and proxies it there, trying the fallbacks in order.
// Production uses an Envoy-based gateway; see docs/gateways.md.
//
// It dials the EPP with TLS, as GIE gateways do: --epp-ca-file verifies the EPP's certificate
// (without it the connection is encrypted but the certificate is not checked, Envoy's behaviour
// with a self-signed EPP), --epp-cert-file and --epp-key-file present a client certificate, and
// --epp-insecure dials in plaintext an EPP started with --epp-secure-serving=false.
//
// --epp takes several EPP replicas (repeated, or comma-separated): ext_proc streams go to them
// round-robin, skipping a replica whose connection is down, as Envoy's ext_proc cluster with
// health checks does (gateway.Balancer). A stream that fails is not retried elsewhere: the
// request fails, as with Envoy's failure_mode_allow=false.
package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/spf13/cobra"

	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/pkg/cli"
	"github.com/spillway-io/spillway/pkg/serve"
)

func main() { cli.Main(newCommand()) }

func newCommand() *cobra.Command {
	var listen, mode string
	var eppAddrs []string
	var eppTLS gateway.EPPTLS
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
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			addrs, err := gateway.SplitAddresses(eppAddrs)
			if err != nil {
				return fmt.Errorf("--epp: %w", err)
			}
			var replicas []gateway.Replica
			for _, a := range addrs {
				conn, err := gateway.DialEPP(a, eppTLS)
				if err != nil {
					return fmt.Errorf("--epp %q: %w", a, err)
				}
				defer conn.Close()
				replicas = append(replicas, gateway.Replica{Address: a, Conn: conn})
			}
			eppAddr := strings.Join(addrs, ",")
			switch {
			case eppTLS.Insecure:
				log.Warn("EPP dialed in plaintext (--epp-insecure): requests and routing decisions travel unencrypted", "component", "gateway", "epp", eppAddr)
			case !eppTLS.Verified():
				log.Warn("EPP certificate not verified: give --epp-ca-file to authenticate the EPP", "component", "gateway", "epp", eppAddr)
			}
			var epp extprocv3.ExternalProcessorClient = extprocv3.NewExternalProcessorClient(replicas[0].Conn)
			if len(replicas) > 1 {
				b, err := gateway.NewBalancer(replicas)
				if err != nil {
					return err
				}
				defer b.Close()
				epp = b
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen --listen: %w", err)
			}
			h := gateway.NewHandler(gateway.Options{
				Client: &gateway.Client{EPP: epp, RequestMode: reqMode},
				Logger: log,
			})
			log.Info("gateway started", "component", "gateway", "listen", l.Addr().String(), "epp", eppAddr,
				"epp_tls", !eppTLS.Insecure, "epp_verified", eppTLS.Verified())
			return serve.HTTP(cmd.Context(), l, h)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", ":8080", "host:port to serve HTTP on")
	cmd.Flags().StringSliceVar(&eppAddrs, "epp", []string{"127.0.0.1:9002"},
		"host:port of the Endpoint Picker; repeat it or separate with commas for several replicas (round-robin over the ones up)")
	cmd.Flags().BoolVar(&eppTLS.Insecure, "epp-insecure", false, "dial the EPP in plaintext (an EPP started with --epp-secure-serving=false)")
	cmd.Flags().StringVar(&eppTLS.CAFile, "epp-ca-file", "", "PEM bundle that verifies the EPP's certificate (default: TLS without verifying it)")
	cmd.Flags().StringVar(&eppTLS.ServerName, "epp-server-name", "", "name the EPP's certificate is verified for (default: the host of each --epp address)")
	cmd.Flags().StringVar(&eppTLS.CertFile, "epp-cert-file", "", "client certificate to present to the EPP (with --epp-key-file)")
	cmd.Flags().StringVar(&eppTLS.KeyFile, "epp-key-file", "", "key of --epp-cert-file")
	cmd.Flags().StringVar(&mode, "body-mode", "full-duplex", "request body mode of the ext_proc exchange: full-duplex or buffered")
	return cmd
}
