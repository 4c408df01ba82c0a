//go:build mandate_faultinject

package storage

import (
	"os"
	"syscall"
)

// With the mandate_faultinject build tag (fault tests only; release builds
// never have it), MANDATE_FAULT=NAME makes the process kill itself with
// SIGKILL when it reaches faultPoint(NAME): a crash at an exact moment,
// such as after the backend acted and before the outcome is recorded.
func init() {
	want := os.Getenv("MANDATE_FAULT")
	if want == "" {
		return
	}
	faultPoint = func(name string) {
		if name == want {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}
