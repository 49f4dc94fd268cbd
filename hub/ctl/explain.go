package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/spillway-io/spillway/pkg/epp"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// explainFlags are explain's request.
type explainFlags struct {
	pool, objective, priority, model, prompt, promptFile string
}

func (o *options) explainCommand() *cobra.Command {
	var f explainFlags
	cmd := &cobra.Command{
		Use:   "explain CLUSTER",
		Short: "Where a request entering CLUSTER would go now, and why (viewer)",
		Long: "explain asks the EPP of CLUSTER's spoke, through the hub replica that holds its session, where\n" +
			"a request would go now. The EPP answers by running the code that routes every request on its\n" +
			"live state, recording nothing: the local candidates and their scores, the saturation detector,\n" +
			"the spill decision (hysteresis state, the cost model's inputs, every remote cluster in order or\n" +
			"with the reason it is no target), and the destination or the refusal a request would get.\n" +
			"A model route's weighted choice and ties between equal scores are drawn at random, as for a\n" +
			"request. hubctl tries each hub address until it reaches the replica holding the session.",
		Example: "  hubctl explain us-east-1 --objective chat-critical --model meta-llama/Llama-3.1-8B-Instruct\n" +
			"  hubctl explain us-east-1 --priority besteffort --prompt-file prompt.txt -o json",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := f.request(args[0], cmd.Flags().Changed("priority"), cmd.InOrStdin())
			if err != nil {
				return err
			}
			return o.ask(cmd, roleViewer, o.explainRequest(req))
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.pool, "pool", "", "NAMESPACE/NAME of the pool; the cluster's EPP refuses any other than its own (default: its own)")
	fs.StringVar(&f.objective, "objective", "", "the request's InferenceObjective (x-gateway-inference-objective)")
	fs.StringVar(&f.priority, "priority", "", "a priority instead of the objective's: an integer, critical, standard or besteffort")
	fs.StringVar(&f.model, "model", "", "the body's model")
	fs.StringVar(&f.prompt, "prompt", "", "the prompt, whose prefix decides cache affinity and whose length the spill cost model reads")
	fs.StringVar(&f.promptFile, "prompt-file", "", "a file holding the prompt (- for standard input)")
	cmd.MarkFlagsMutuallyExclusive("prompt", "prompt-file")
	return cmd
}

// request builds the ExplainRequest of the flags.
func (f *explainFlags) request(cluster string, priority bool, stdin io.Reader) (*pb.ExplainRequest, error) {
	req := &pb.ExplainRequest{ClusterId: cluster, Objective: f.objective, Model: f.model, Prompt: f.prompt}
	if f.pool != "" {
		ref, err := parsePool(f.pool)
		if err != nil {
			return nil, fmt.Errorf("--pool: %w", err)
		}
		req.Pool = ref
	}
	if priority {
		p, err := parsePriority(f.priority)
		if err != nil {
			return nil, err
		}
		req.Priority = &p
	}
	if f.promptFile != "" {
		var b []byte
		var err error
		if f.promptFile == "-" {
			b, err = io.ReadAll(stdin)
		} else {
			b, err = os.ReadFile(f.promptFile)
		}
		if err != nil {
			return nil, fmt.Errorf("--prompt-file: %w", err)
		}
		req.Prompt = string(b)
	}
	return req, nil
}

// parsePriority reads --priority: an integer or one of the EPP's aliases.
func parsePriority(s string) (int32, error) {
	switch strings.ToLower(s) {
	case "critical":
		return epp.PriorityCritical, nil
	case "standard":
		return epp.PriorityStandard, nil
	case "besteffort", "best-effort":
		return epp.PriorityBestEffort, nil
	}
	p, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("--priority %q: want an integer, critical, standard or besteffort", s)
	}
	return int32(p), nil
}

// explainOutput is explain's JSON and YAML: the asking replica and the EPP's explanation.
type explainOutput struct {
	Cluster     string          `json:"cluster"`
	Hub         string          `json:"hub"`
	Explanation epp.Explanation `json:"explanation"`
}

// explainRequest asks for the explanation and prints it.
func (o *options) explainRequest(req *pb.ExplainRequest) call {
	return func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
		resp, err := c.Explain(ctx, req)
		if err != nil {
			return err
		}
		var e epp.Explanation
		if err := json.Unmarshal(resp.GetExplanation(), &e); err != nil {
			return fmt.Errorf("the spoke's explanation: %w", err)
		}
		if !o.tabular() {
			return o.writeJSON(w, explainOutput{Cluster: resp.GetClusterId(), Hub: resp.GetHubId(), Explanation: e})
		}
		o.describeExplanation(w, resp, e)
		return nil
	}
}

// describeExplanation writes an explanation in describe's layout.
func (o *options) describeExplanation(w io.Writer, resp *pb.ExplainResponse, e epp.Explanation) {
	d := &describer{w: w}
	d.field("Cluster", fmt.Sprintf("%s (asked through hub replica %s)", resp.GetClusterId(), resp.GetHubId()))
	d.field("Pool", e.Pool)
	objective := "(none)"
	if e.Objective != "" {
		objective = e.Objective
	}
	d.field("Objective", fmt.Sprintf("%s, priority %d (%s)", objective, e.Priority, e.PriorityClass))
	model := dash(e.Model)
	if e.TargetModel != e.Model {
		model += " → sent as " + dash(e.TargetModel)
	}
	d.field("Model", model)
	d.field("Outcome", e.Outcome)
	if e.Status != 0 {
		d.field("Answer", fmt.Sprintf("%d: %s", e.Status, e.Message))
	} else {
		d.field("Destination", dash(strings.Join(e.Destination, ", ")))
	}
	d.printf("Steps:\n")
	for i, s := range e.Steps {
		d.printf("  %d. %s\n", i+1, s)
	}

	// The scorers' columns, in name order, from every candidate's scores.
	scorers := map[string]bool{}
	for _, c := range e.Candidates {
		for n := range c.Scores {
			scorers[n] = true
		}
	}
	names := slices.Sorted(maps.Keys(scorers))
	columns := []column{{name: "RANK"}, {name: "ENDPOINT"}, {name: "QUEUE"}, {name: "RUNNING"}, {name: "KV-CACHE"}, {name: "SATURATED"}, {name: "SCORE"}}
	for _, n := range names {
		columns = append(columns, column{name: strings.ToUpper(strings.TrimSuffix(n, "-scorer")) + "-SCORE"})
	}
	var rows [][]string
	for _, c := range e.Candidates {
		rank := "-"
		if c.Rank > 0 {
			rank = strconv.Itoa(c.Rank)
		}
		sat := yesNo(c.Saturated)
		if c.Unobserved {
			sat = "unobserved"
		}
		score := "-"
		if c.Scores != nil {
			score = fmt.Sprintf("%.3f", c.Score)
		}
		row := []string{rank, c.Address, strconv.Itoa(c.WaitingQueue), strconv.Itoa(c.Running), fmt.Sprintf("%.2f", c.KVCacheUsage), sat, score}
		for _, n := range names {
			if v, ok := c.Scores[n]; ok {
				row = append(row, fmt.Sprintf("%.3f", v))
			} else {
				row = append(row, "-")
			}
		}
		rows = append(rows, row)
	}
	d.table(o, fmt.Sprintf("Candidates (%d of the pool's %d endpoints; every one saturated: %s)", len(e.Candidates), e.Endpoints, yesNo(e.Saturated)),
		"(none)", columns, rows)

	sp := e.Spill
	if sp == nil {
		d.printf("Spill:\n  (no spill policy: the EPP routes locally only)\n")
		return
	}
	d.printf("Spill:\n")
	decision := "stay"
	if sp.Spill {
		decision = "spill"
	}
	hyst := "not spilling"
	if sp.Spilling {
		hyst = "spilling since " + o.age(sp.Since, !sp.Since.IsZero())
	}
	local := fmt.Sprintf("%d ready endpoints, queue %d, saturation %.2f", sp.LocalReadyEndpoints, sp.LocalQueueDepth, sp.LocalSaturation)
	switch {
	case sp.ImportOnly:
		local = "none: the cluster only imports the pool"
	case sp.Unobserved:
		local += " (not observed yet)"
	case sp.LocalSaturated:
		local += ", saturated"
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "  Decision:    %s (%s); mode %s\n", decision, sp.Reason, sp.Mode)
	fmt.Fprintf(&buf, "  Hysteresis:  %s (trip at %.2f, clear below %.2f), eligible from priority %d\n", hyst, sp.TripMark, sp.ClearMark, sp.MinPriority)
	fmt.Fprintf(&buf, "  Local pool:  %s\n", local)
	if sp.Weighed {
		fmt.Fprintf(&buf, "  Cost model:  local wait %s against the best target's RTT plus prefill %s (service time %s)\n",
			seconds(sp.LocalWaitSeconds), seconds(sp.PrefillSeconds), seconds(sp.ServiceTimeSeconds))
	}
	d.printf("%s", buf.String())
	rows = rows[:0]
	for _, t := range sp.Targets {
		rank, cost, cached := "-", "-", "-"
		if t.Rank > 0 {
			rank, cost, cached = strconv.Itoa(t.Rank), seconds(t.CostSeconds), strconv.Itoa(t.CachedBlocks)
		}
		rows = append(rows, []string{rank, t.Cluster, t.Region, seconds(t.RTTSeconds), strconv.FormatUint(uint64(t.ReadyEndpoints), 10),
			strconv.FormatUint(uint64(t.QueueDepth), 10), fmt.Sprintf("%.2f", t.Saturation), seconds(t.AgeSeconds), cached, cost, dash(t.Rejected)})
	}
	d.table(o, "Remote clusters", "(none serves the pool)", []column{{name: "RANK"}, {name: "CLUSTER"}, {name: "REGION"}, {name: "RTT"},
		{name: "READY"}, {name: "QUEUE"}, {name: "SATURATION"}, {name: "REPORT-AGE"}, {name: "CACHED-BLOCKS"}, {name: "COST"}, {name: "NOT-A-TARGET"}}, rows)
}

// seconds renders a duration given in seconds, rounded to the millisecond.
func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
