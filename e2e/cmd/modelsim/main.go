// Command modelsim runs simulated vLLM model servers, one per --endpoints address, in one
// process. See pkg/modelsim for the load model.
package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/spillway-io/spillway/e2e/modelsim"
	"github.com/spillway-io/spillway/pkg/cli"
)

func main() { cli.Main(newCommand()) }

func newCommand() *cobra.Command {
	cfg := modelsim.DefaultConfig()
	var endpoints []string
	cmd := &cobra.Command{
		Use:          "modelsim --endpoints HOST:PORT[,HOST:PORT...]",
		Short:        "Simulated vLLM model servers, one per address",
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(endpoints) == 0 {
				return fmt.Errorf("--endpoints: at least one host:port")
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			ls, err := modelsim.Listen(endpoints)
			if err != nil {
				return err
			}
			slog.Info("model servers started", "component", "modelsim", "endpoints", endpoints, "model", cfg.Model)
			return modelsim.Serve(cmd.Context(), ls, cfg)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&endpoints, "endpoints", nil, "addresses to serve, one simulated model server each")
	f.StringVar(&cfg.Model, "model", cfg.Model, "served base model name")
	f.StringSliceVar(&cfg.LoRAs, "loras", cfg.LoRAs, "LoRA adapters the servers can load")
	f.IntVar(&cfg.MaxLoRAs, "max-loras", cfg.MaxLoRAs, "adapters loaded at once")
	f.IntVar(&cfg.MaxNumSeqs, "max-num-seqs", cfg.MaxNumSeqs, "sequences running at once")
	f.IntVar(&cfg.BlockSize, "block-size", cfg.BlockSize, "KV-cache block size in tokens")
	f.IntVar(&cfg.NumGPUBlocks, "num-gpu-blocks", cfg.NumGPUBlocks, "KV-cache blocks")
	f.Float64Var(&cfg.PrefillTokensPerSecond, "prefill-tokens-per-second", cfg.PrefillTokensPerSecond, "prefill speed")
	f.DurationVar(&cfg.PrefillOverhead, "prefill-overhead", cfg.PrefillOverhead, "fixed prefill cost per request")
	f.DurationVar(&cfg.DecodeLatency, "decode-latency", cfg.DecodeLatency, "time per output token with one running sequence")
	f.DurationVar(&cfg.DecodeLatencyPerSeq, "decode-latency-per-seq", cfg.DecodeLatencyPerSeq, "added time per token for each other running sequence")
	f.DurationVar(&cfg.LoRALoadLatency, "lora-load-latency", cfg.LoRALoadLatency, "cost of loading an adapter")
	f.IntVar(&cfg.DefaultMaxTokens, "default-max-tokens", cfg.DefaultMaxTokens, "output tokens when a request sets no max_tokens")
	f.IntVar(&cfg.MaxModelLen, "max-model-len", cfg.MaxModelLen, "bound on prompt plus output tokens")
	return cmd
}
