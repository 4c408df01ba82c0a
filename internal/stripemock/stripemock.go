// Package stripemock starts Stripe's own API stub, stripe-mock, for tests:
// a real process on 127.0.0.1 serving the repo's paid-PaymentIntent
// fixtures (testdata/stripe-mock). It finds stripe-mock on PATH or installs
// the pinned version into a temporary directory; when neither works the
// test is skipped, unless MANDATE_REQUIRE_STRIPE_MOCK=1 (as in CI) makes it
// fail.
package stripemock

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Version is the stripe-mock release the tests run.
const Version = "v0.203.0"

var (
	once    sync.Once
	binPath string
	binErr  string
)

// find returns the stripe-mock binary, installing it once per test binary.
func find() (string, string) {
	once.Do(func() {
		if p, err := exec.LookPath("stripe-mock"); err == nil {
			binPath = p
			return
		}
		dir, err := os.MkdirTemp("", "stripe-mock-")
		if err != nil {
			binErr = err.Error()
			return
		}
		cmd := exec.Command("go", "install", "github.com/stripe/stripe-mock@"+Version)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = "go install stripe-mock: " + err.Error() + "\n" + string(out)
			return
		}
		binPath = filepath.Join(dir, "stripe-mock")
	})
	return binPath, binErr
}

// Fixtures is the path of the repo's fixtures file.
func Fixtures() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "stripe-mock", "fixtures3.json")
}

// Start runs stripe-mock with the repo's fixtures and returns its HTTP base
// URL. It stops when the test ends.
func Start(t testing.TB) string {
	t.Helper()
	bin, why := find()
	if bin == "" {
		if os.Getenv("MANDATE_REQUIRE_STRIPE_MOCK") == "1" {
			t.Fatalf("stripe-mock is required but unavailable: %s", why)
		}
		t.Skipf("stripe-mock unavailable (set MANDATE_REQUIRE_STRIPE_MOCK=1 to fail instead): %s", why)
	}
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0", "-fixtures", Fixtures())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "Listening for HTTP at address: "); ok {
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		return "http://" + a
	case <-time.After(60 * time.Second):
		t.Fatalf("stripe-mock did not start listening within a minute")
	}
	return ""
}
