// Package logging builds the slog loggers of Spillway's binaries from their --log-level and
// --log-format flags.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Options are the logging flags every binary shares.
type Options struct {
	// Level is debug, info, warn or error.
	Level string
	// Format is text or json.
	Format string
}

// Validate checks the options.
func (o Options) Validate() error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(o.Level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.Level)
	}
	switch strings.ToLower(o.Format) {
	case "text", "json":
		return nil
	}
	return fmt.Errorf("--log-format %q: want text or json", o.Format)
}

// New returns a logger writing to w.
func New(o Options, w io.Writer) (*slog.Logger, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	var l slog.Level
	_ = l.UnmarshalText([]byte(o.Level))
	ho := &slog.HandlerOptions{Level: l}
	if strings.ToLower(o.Format) == "json" {
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return slog.New(slog.NewTextHandler(w, ho)), nil
}
