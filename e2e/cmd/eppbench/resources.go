package main

import (
	"fmt"

	"github.com/prometheus/procfs"
)

// The resources of a process, read from /proc through prometheus/procfs.

// cpuSeconds is a process's user+system CPU time.
func cpuSeconds(pid int) (float64, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, err
	}
	return st.CPUTime(), nil
}

// voluntarySwitches is the sum of a process's threads' voluntary context switches.
func voluntarySwitches(pid int) (int64, error) {
	threads, err := procfs.AllThreads(pid)
	if err != nil || len(threads) == 0 {
		return 0, fmt.Errorf("no threads of %d: %v", pid, err)
	}
	var n int64
	for _, t := range threads {
		st, err := t.NewStatus()
		if err != nil {
			continue // a thread that ended
		}
		n += int64(st.VoluntaryCtxtSwitches)
	}
	return n, nil
}

// peakRSS is a process's peak resident set size in MiB (VmHWM).
func peakRSS(pid int) (float64, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.NewStatus()
	if err != nil {
		return 0, err
	}
	if st.VmHWM == 0 {
		return 0, fmt.Errorf("no VmHWM for %d", pid)
	}
	return round3(float64(st.VmHWM) / (1 << 20)), nil
}

// machine describes the CPUs: their count and model.
func machine() string {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return "unknown machine"
	}
	cpus, err := fs.CPUInfo()
	if err != nil || len(cpus) == 0 {
		return "unknown machine"
	}
	return fmt.Sprintf("%d cores, %s", len(cpus), cpus[0].ModelName)
}
