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
	"sigs.k8s.io/yaml"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// structured writes a message as JSON or YAML; it reports false for table output.
func (o *options) structured(w io.Writer, m proto.Message) (bool, error) {
	if o.output == "table" {
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

// writeStructured writes indented JSON as --output asks: as it is for json, converted for yaml.
func (o *options) writeStructured(w io.Writer, js []byte) error {
	if o.output == "yaml" {
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
