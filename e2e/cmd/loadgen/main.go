// Command loadgen sends open-loop inference load to a gateway and prints a summary per traffic
// class (and, with --results, every request as JSON lines). See e2e/loadgen.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/spillway-io/spillway/e2e/loadgen"
	"github.com/spillway-io/spillway/pkg/cli"
)

func main() { cli.Main(newCommand()) }

func newCommand() *cobra.Command {
	o := loadgen.Options{Model: "meta-llama/Llama-3.1-8B-Instruct", Prefixes: 4, PrefixBytes: 2048, MaxTokens: 32, StreamShare: 0.5}
	var mix []string
	var results string
	cmd := &cobra.Command{
		Use:          "loadgen --target URL --rate N --duration D",
		Short:        "Open-loop inference load with a mix of objectives",
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, m := range mix {
				// name=objective:share, e.g. Critical=critical-chat:0.2
				name, rest, ok := strings.Cut(m, "=")
				objective, share, ok2 := strings.Cut(rest, ":")
				f, err := strconv.ParseFloat(share, 64)
				if !ok || !ok2 || err != nil || f <= 0 {
					return fmt.Errorf("--class %q: want NAME=OBJECTIVE:SHARE, e.g. Critical=critical-chat:0.2", m)
				}
				o.Classes = append(o.Classes, loadgen.Class{Name: name, Objective: objective, Share: f})
			}
			rs, err := loadgen.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if results != "" {
				f, err := os.Create(results)
				if err != nil {
					return err
				}
				enc := json.NewEncoder(f)
				for _, r := range rs {
					_ = enc.Encode(r)
				}
				if err := f.Close(); err != nil {
					return err
				}
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(loadgen.Summarize(rs))
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.Targets, "target", []string{"http://127.0.1.1:8080"}, "gateway base URL; several are used in turn (round-robin)")
	f.Float64Var(&o.Rate, "rate", 10, "mean arrivals per second")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to send")
	f.StringArrayVar(&mix, "class", []string{"Standard=:1"}, "traffic class NAME=OBJECTIVE:SHARE (repeatable)")
	f.StringVar(&o.Model, "model", o.Model, "model of every request")
	f.StringToStringVar(&o.Headers, "header", nil, "header NAME=VALUE of every request (repeatable)")
	f.IntVar(&o.Prefixes, "prefixes", o.Prefixes, "distinct shared prompt prefixes")
	f.IntVar(&o.PrefixBytes, "prefix-bytes", o.PrefixBytes, "length of each shared prefix")
	f.IntVar(&o.HomePrefixes[0], "home-prefix-from", 0, "first of the prefixes at home in this load's region (with --home-prefix-to)")
	f.IntVar(&o.HomePrefixes[1], "home-prefix-to", 0, "end (exclusive) of the prefixes at home in this load's region")
	f.Float64Var(&o.HomeShare, "home-share", 0.9, "fraction of the requests that use a home prefix, when home prefixes are set")
	f.IntVar(&o.MaxTokens, "max-tokens", o.MaxTokens, "max_tokens of every request")
	f.Float64Var(&o.StreamShare, "stream-share", o.StreamShare, "fraction of streamed requests")
	f.IntVar(&o.MaxInFlight, "max-in-flight", 1024, "concurrent requests at most")
	f.StringVar(&results, "results", "", "file to write every request's result to, as JSON lines")
	return cmd
}
