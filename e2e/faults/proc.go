package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spillway-io/spillway/e2e/localfleet"
)

// Proc is one process of the fleet, in a namespace, that can be killed with SIGKILL (by its PID)
// and started again with the same command line and environment. Each start logs to its own
// file: <name>.log, then <name>-2.log, and so on.
type Proc struct {
	Name string
	// Node is the namespace's node.
	Node string

	ns, logDir, bin string
	args, env       []string

	mu     sync.Mutex
	cur    *localfleet.Proc
	starts int
	logs   []string
}

// start runs the process (again).
func (p *Proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.starts++
	name := p.Name
	if p.starts > 1 {
		name = fmt.Sprintf("%s-%d", p.Name, p.starts)
	}
	// `ip netns exec` execs the binary: the PID is the binary's.
	lp, err := localfleet.StartProcEnv(p.logDir, name, "ip", p.env, append([]string{"netns", "exec", p.ns, p.bin}, p.args...)...)
	if err != nil {
		return err
	}
	p.cur = lp
	p.logs = append(p.logs, lp.LogPath)
	return nil
}

// Pid is the running process's ID.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur.Pid()
}

// Running reports whether the current process has not exited.
func (p *Proc) Running() bool {
	p.mu.Lock()
	cur := p.cur
	p.mu.Unlock()
	select {
	case <-cur.Done():
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL to the process's PID, as a crash would, and waits for it to exit.
func (p *Proc) Kill() {
	p.mu.Lock()
	cur := p.cur
	p.mu.Unlock()
	select {
	case <-cur.Done():
		return
	default:
	}
	_ = syscall.Kill(cur.Pid(), syscall.SIGKILL)
	<-cur.Done()
}

// Restart starts the process again once it has exited (after Kill).
func (p *Proc) Restart() error {
	if p.Running() {
		return fmt.Errorf("%s is still running", p.Name)
	}
	return p.start()
}

// Stop ends the process with SIGTERM, SIGKILL after grace.
func (p *Proc) Stop(grace time.Duration) error {
	p.mu.Lock()
	cur := p.cur
	p.mu.Unlock()
	if cur == nil {
		return nil
	}
	return cur.Stop(grace)
}

// Logs returns the contents of every log of the process, oldest first.
func (p *Proc) Logs() string {
	p.mu.Lock()
	paths := append([]string(nil), p.logs...)
	p.mu.Unlock()
	var out string
	for _, lp := range paths {
		b, _ := os.ReadFile(lp)
		out += string(b)
	}
	return out
}

// CurrentLog is the log of the running (or last) start.
func (p *Proc) CurrentLog() string {
	p.mu.Lock()
	lp := p.logs[len(p.logs)-1]
	p.mu.Unlock()
	b, _ := os.ReadFile(lp)
	return string(b)
}

// LogTail is the end of the current log, for failure messages.
func (p *Proc) LogTail(n int) string {
	p.mu.Lock()
	lp := p.logs[len(p.logs)-1]
	p.mu.Unlock()
	b, _ := os.ReadFile(lp)
	s := string(b)
	return fmt.Sprintf("--- %s ---\n%s", filepath.Base(lp), s[max(0, len(s)-n):])
}
