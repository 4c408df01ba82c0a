package main

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// TestCPUTime: the CPU time read from /proc grows by what this process
// burns (at least most of it: the unit is 10 ms), and not while it sleeps.
func TestCPUTime(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	pid := os.Getpid()
	before, err := cpuTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	slept, err := cpuTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	var x uint64
	for start := time.Now(); time.Since(start) < 300*time.Millisecond; {
		for i := range 10000 {
			x += uint64(i) * x
		}
	}
	burnt, err := cpuTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Another process sharing the cores may take some of the 300 ms of
	// wall time, so only half is required.
	if got := burnt - slept; got < 150*time.Millisecond {
		t.Errorf("burning CPU for 300 ms added %v of CPU time (x=%d)", got, x)
	}
	if got := slept - before; got > 100*time.Millisecond {
		t.Errorf("sleeping 300 ms added %v of CPU time", got)
	}
	if _, err := cpuTime(1 << 30); err == nil {
		t.Error("cpuTime of a process that does not exist succeeded")
	}
}
