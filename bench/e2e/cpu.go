package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which Linux fixes at 100 for user space on every architecture Go
// supports (sysconf(_SC_CLK_TCK) would need cgo to ask).
const clockTick = 10 * time.Millisecond

// cpuTime is the CPU time, user and system, that process pid and all its
// threads have used so far; 0 and an error where /proc does not say.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// utime and stime are fields 14 and 15, the 12th and 13th after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the command name", pid, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(string(s), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %v", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// serversCPU is the CPU time the servers' processes have used so far, 0 if
// it cannot be read for one of them.
func serversCPU(servers []*server) time.Duration {
	var sum time.Duration
	for _, s := range servers {
		if s.pid == 0 {
			return 0
		}
		d, err := cpuTime(s.pid)
		if err != nil {
			return 0
		}
		sum += d
	}
	return sum
}
