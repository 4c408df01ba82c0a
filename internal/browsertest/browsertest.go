// Package browsertest starts headless Chromium for the browser tests of the
// admin page (admin/ and cmd/mandate/), so both packages drive the same
// browser the same way.
package browsertest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ChromiumPath is where CI installs Chromium (.ci/run: apt-get install chromium).
const ChromiumPath = "/usr/bin/chromium"

// Start starts headless Chromium for one test, with its profile and HOME in
// temporary directories, and stops it at cleanup. It skips the test only
// when Chromium is not installed. The whole browser lives at most limit, so
// a hung page fails the test rather than CI.
func Start(t *testing.T, limit time.Duration) context.Context {
	t.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		t.Skipf("browser tests need Chromium at %s (apt-get install -y chromium): %v", ChromiumPath, err)
	}
	home := t.TempDir()
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(ChromiumPath),
		chromedp.Headless, chromedp.NoSandbox, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(filepath.Join(home, "profile")),
		chromedp.Env("HOME="+home),
		chromedp.WindowSize(1280, 900),
	)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, limit)
	t.Cleanup(func() {
		cancelTimeout()
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting Chromium: %v", err)
	}
	return ctx
}
