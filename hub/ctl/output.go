package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// The values of --output besides jsonpath=TEMPLATE.
const (
	outputTable = "table"
	outputWide  = "wide"
	outputJSON  = "json"
	outputYAML  = "yaml"
	jsonpathArg = "jsonpath="
)

// tabular reports whether --output asks for a table (wide or not).
func (o *options) tabular() bool { return o.output == outputTable || o.output == outputWide }

// structured writes a message as JSON, YAML or through a JSONPath template; it reports false for
// table output. The JSON is protojson's, the hub's API as docs/operations.md documents it.
func (o *options) structured(w io.Writer, m proto.Message) (bool, error) {
	if o.tabular() {
		return false, nil
	}
	raw, err := protojson.Marshal(m)
	if err != nil {
		return true, err
	}
	// protojson varies its whitespace on purpose; compact and indent for a stable output.
	var compact, js bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return true, err
	}
	if err := json.Indent(&js, compact.Bytes(), "", "  "); err != nil {
		return true, err
	}
	return true, o.writeStructured(w, js.Bytes())
}

// writeJSON writes v, a struct of hubctl's own with JSON tags, as --output asks.
func (o *options) writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return o.writeStructured(w, b)
}

// writeStructured writes indented JSON as --output asks: as it is for json, converted for yaml,
// through the template for jsonpath.
func (o *options) writeStructured(w io.Writer, js []byte) error {
	if tmpl, ok := strings.CutPrefix(o.output, jsonpathArg); ok {
		p, err := printers.NewJSONPathPrinter(tmpl)
		if err != nil {
			return fmt.Errorf("--output jsonpath: %w", err)
		}
		var obj map[string]any
		if err := json.Unmarshal(js, &obj); err != nil {
			return err
		}
		return p.PrintObj(&unstructured.Unstructured{Object: obj}, w)
	}
	if o.output == outputYAML {
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	}
	_, err := fmt.Fprintln(w, string(js))
	return err
}

// age renders how long ago t was; "never" when there is no t.
func (o *options) age(t time.Time, ok bool) string {
	if !ok {
		return "never"
	}
	return roughly(max(o.now().Sub(t), 0)) + " ago"
}

// capacityAge renders how old a capacity report is: its age as the hub measured it (a duration,
// so that the clocks of hubctl's host and the hub's never meet), else from its received_at.
func (o *options) capacityAge(rc *pb.RemoteCapacity) string {
	if age := rc.GetAge(); age != nil {
		return roughly(max(age.AsDuration(), 0)) + " ago"
	}
	return o.age(rc.GetReceivedAt().AsTime(), rc.GetReceivedAt() != nil)
}

// until renders how long until t; "expired" once it has passed.
func (o *options) until(t time.Time) string {
	d := t.Sub(o.now())
	if d <= 0 {
		return "expired"
	}
	if d >= time.Minute {
		d = d.Round(time.Minute) // a 1h token read a moment later still expires "in 1h"
	}
	return "in " + exactly(d)
}

// exactly renders d as Go does, without its zero units: 1h, 1h30m, 45s.
func exactly(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func roughly(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	}
	return fmt.Sprintf("%dh", int(d.Hours()))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// column is one column of a table; a wide one shows only with -o wide.
type column struct {
	name string
	wide bool
}

// printTable prints rows under columns with kubectl's table printer: -o wide adds the wide
// columns, --no-headers leaves the header out. A row holds one cell per column.
func (o *options) printTable(w io.Writer, columns []column, rows [][]string) error {
	t := &metav1.Table{}
	for _, c := range columns {
		def := metav1.TableColumnDefinition{Name: c.name, Type: "string"}
		if c.wide {
			def.Priority = 1
		}
		t.ColumnDefinitions = append(t.ColumnDefinitions, def)
	}
	for _, r := range rows {
		cells := make([]any, len(r))
		for i, c := range r {
			cells[i] = c
		}
		t.Rows = append(t.Rows, metav1.TableRow{Cells: cells})
	}
	return printers.NewTablePrinter(printers.PrintOptions{NoHeaders: o.noHeaders, Wide: o.output == outputWide}).PrintObj(t, w)
}
