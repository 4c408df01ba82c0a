package main

import (
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestCPUTime: the CPU time read from /proc grows as this process burns
// CPU, agrees with what getrusage says it used, and does not grow while it
// sleeps. It burns until the reading has grown by 200 ms (at most 30 s of
// wall time), so a busy machine slows it down rather than failing it.
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
	if got := slept - before; got > 100*time.Millisecond {
		t.Errorf("sleeping 300 ms added %v of CPU time", got)
	}
	var x uint64
	burnt := slept
	for start := time.Now(); burnt-slept < 200*time.Millisecond; {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("30 s of burning CPU added %v of CPU time (x=%d)", burnt-slept, x)
		}
		for i := range 100000 {
			x += uint64(i) * x
		}
		if burnt, err = cpuTime(pid); err != nil {
			t.Fatal(err)
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	rusage := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if burnt, err = cpuTime(pid); err != nil {
		t.Fatal(err)
	}
	// /proc counts in 10 ms ticks, getrusage more finely: they agree
	// within a few ticks.
	if d := rusage - burnt; d > 50*time.Millisecond || d < -50*time.Millisecond {
		t.Errorf("/proc says %v of CPU time, getrusage %v", burnt, rusage)
	}
	if _, err := cpuTime(1 << 30); err == nil {
		t.Error("cpuTime of a process that does not exist succeeded")
	}
}
