package ctl

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// ConfigEnv names the environment variable that points at hubctl's configuration file.
const ConfigEnv = "SPILLWAY_HUBCTL_CONFIG"

// hubctlConfig is hubctl's configuration file: named contexts, each a fleet's hub addresses and
// the credentials to reach it with, as kubectl's kubeconfig holds clusters and users.
type hubctlConfig struct {
	CurrentContext string       `json:"current-context,omitempty"`
	Contexts       []hubContext `json:"contexts"`
}

// hubContext is one fleet: --hub, --credentials-dir and --tls-server-name under a name.
type hubContext struct {
	Name string `json:"name"`
	Hub  string `json:"hub,omitempty"`
	// CredentialsDir holds ca.crt, tls.crt and tls.key; a relative path is relative to the
	// configuration file's directory.
	CredentialsDir string `json:"credentials-dir,omitempty"`
	TLSServerName  string `json:"tls-server-name,omitempty"`
}

// configPath is the configuration file: --config, else $SPILLWAY_HUBCTL_CONFIG, else
// hubctl.yaml in the user's configuration directory (~/.config/spillway on Linux).
func (o *options) configPath() string {
	if o.config != "" {
		return o.config
	}
	if p := o.getenv(ConfigEnv); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "spillway", "hubctl.yaml")
}

// loadConfig reads the configuration file; a missing file is an empty configuration.
func loadConfig(path string) (*hubctlConfig, error) {
	cfg := &hubctlConfig{}
	if path == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hubctl configuration: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, cfg); err != nil {
		return nil, fmt.Errorf("hubctl configuration %s: %w", path, err)
	}
	seen := map[string]bool{}
	for _, c := range cfg.Contexts {
		if c.Name == "" || seen[c.Name] {
			return nil, fmt.Errorf("hubctl configuration %s: every context needs a name of its own (%q)", path, c.Name)
		}
		seen[c.Name] = true
	}
	return cfg, nil
}

// context returns the context named, or nil.
func (c *hubctlConfig) context(name string) *hubContext {
	for i := range c.Contexts {
		if c.Contexts[i].Name == name {
			return &c.Contexts[i]
		}
	}
	return nil
}

func (c *hubctlConfig) names() string {
	var ns []string
	for _, x := range c.Contexts {
		ns = append(ns, x.Name)
	}
	if len(ns) == 0 {
		return "none"
	}
	return strings.Join(ns, ", ")
}

// save writes the configuration file, readable by its owner only (it names credentials).
func (c *hubctlConfig) save(path string) error {
	if path == "" {
		return errors.New("no place for hubctl's configuration: give --config or $" + ConfigEnv)
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// applyContext fills the connection flags the user did not give from the selected context:
// --context, else the file's current context. Flags and the environment come first.
func (o *options) applyContext(cmd *cobra.Command) error {
	path := o.configPath()
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	name := o.contextName
	if name == "" {
		name = cfg.CurrentContext
	}
	if name == "" {
		return nil
	}
	ctx := cfg.context(name)
	if ctx == nil {
		return fmt.Errorf("context %q is not in %s (contexts: %s)", name, path, cfg.names())
	}
	changed := func(flag string) bool {
		f := cmd.Flags().Lookup(flag)
		return f != nil && f.Changed
	}
	if !changed("hub") && ctx.Hub != "" {
		o.hub = ctx.Hub
	}
	if !changed("tls-server-name") && ctx.TLSServerName != "" {
		o.tlsServerName = ctx.TLSServerName
	}
	if o.credentialsDir == "" && o.getenv(CredentialsEnv) == "" && ctx.CredentialsDir != "" {
		o.credentialsDir = ctx.CredentialsDir
		if !filepath.IsAbs(o.credentialsDir) {
			o.credentialsDir = filepath.Join(filepath.Dir(path), o.credentialsDir)
		}
	}
	return nil
}

func (o *options) configCommand() *cobra.Command {
	cfg := &cobra.Command{
		Use:   "config",
		Short: "Named contexts: which hub to ask, with which credentials",
		Long: "hubctl's configuration file (--config, else $" + ConfigEnv + ", else ~/.config/spillway/hubctl.yaml)\n" +
			"holds named contexts, each a fleet's --hub addresses, --credentials-dir and --tls-server-name.\n" +
			"--context picks one for a command, else the file's current context. A flag given on the command\n" +
			"line, and $" + CredentialsEnv + ", come before the context.",
	}
	edit := func(run func(c *hubctlConfig, args []string) (string, error)) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			path := o.configPath()
			c, err := loadConfig(path)
			if err != nil {
				return err
			}
			msg, err := run(c, args)
			if err != nil {
				return err
			}
			if err := c.save(path); err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), msg)
			return err
		}
	}
	set := &cobra.Command{
		Use:   "set-context NAME",
		Short: "Create or change a context from --hub, --credentials-dir and --tls-server-name",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return edit(func(c *hubctlConfig, args []string) (string, error) {
				ctx := c.context(args[0])
				verb := "changed"
				if ctx == nil {
					c.Contexts = append(c.Contexts, hubContext{Name: args[0]})
					ctx, verb = &c.Contexts[len(c.Contexts)-1], "created"
				}
				for flag, into := range map[string]*string{"hub": &ctx.Hub, "credentials-dir": &ctx.CredentialsDir, "tls-server-name": &ctx.TLSServerName} {
					if f := cmd.Flags().Lookup(flag); f != nil && f.Changed {
						*into = f.Value.String()
					}
				}
				if f := cmd.Flags().Lookup("hub"); f != nil && f.Changed {
					if _, err := parseHubs(ctx.Hub); err != nil {
						return "", err
					}
				}
				if c.CurrentContext == "" {
					c.CurrentContext = ctx.Name
				}
				return fmt.Sprintf("context %s %s", ctx.Name, verb), nil
			})(cmd, args)
		},
	}
	use := &cobra.Command{
		Use:   "use-context NAME",
		Short: "Make a context the current one",
		Args:  cobra.ExactArgs(1),
		RunE: edit(func(c *hubctlConfig, args []string) (string, error) {
			if c.context(args[0]) == nil {
				return "", fmt.Errorf("no context %q (contexts: %s)", args[0], c.names())
			}
			c.CurrentContext = args[0]
			return "switched to context " + args[0], nil
		}),
	}
	del := &cobra.Command{
		Use:   "delete-context NAME",
		Short: "Remove a context",
		Args:  cobra.ExactArgs(1),
		RunE: edit(func(c *hubctlConfig, args []string) (string, error) {
			n := len(c.Contexts)
			c.Contexts = slices.DeleteFunc(c.Contexts, func(x hubContext) bool { return x.Name == args[0] })
			if len(c.Contexts) == n {
				return "", fmt.Errorf("no context %q (contexts: %s)", args[0], c.names())
			}
			if c.CurrentContext == args[0] {
				c.CurrentContext = ""
			}
			return "deleted context " + args[0], nil
		}),
	}
	get := &cobra.Command{
		Use:   "get-contexts",
		Short: "List the contexts; * marks the current one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(o.configPath())
			if err != nil {
				return err
			}
			return o.printContexts(cmd.OutOrStdout(), c)
		},
	}
	current := &cobra.Command{
		Use:   "current-context",
		Short: "Print the current context's name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(o.configPath())
			if err != nil {
				return err
			}
			if c.CurrentContext == "" {
				return errors.New("no current context: hubctl config use-context NAME")
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), c.CurrentContext)
			return err
		},
	}
	cfg.AddCommand(set, use, del, get, current)
	return cfg
}

func (o *options) printContexts(w io.Writer, c *hubctlConfig) error {
	if !o.tabular() {
		return o.writeJSON(w, c)
	}
	rows := make([][]string, 0, len(c.Contexts))
	for _, x := range c.Contexts {
		cur := ""
		if x.Name == c.CurrentContext {
			cur = "*"
		}
		rows = append(rows, []string{cur, x.Name, dash(x.Hub), dash(x.CredentialsDir), dash(x.TLSServerName)})
	}
	return o.printTable(w, []column{{name: "CURRENT"}, {name: "NAME"}, {name: "HUB"}, {name: "CREDENTIALS"}, {name: "TLS SERVER NAME"}}, rows)
}
