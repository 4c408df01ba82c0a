package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dockerBuildCmd is the build command of the Dockerfile's builder stage;
// the test checks the Dockerfile still has it, and uses it when the base
// images cannot be pulled.
const dockerBuildCmd = `CGO_ENABLED=0 go build -trimpath -buildvcs=auto -ldflags="$flags" -o /out/mandate ./cmd/mandate`

// docker runs the docker client with a time limit.
func docker(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// TestDockerImage builds the image from the repository's Dockerfile and
// runs it as the README says: a key made with `agent key create` in one
// container, `serve --insecure-http` in another on the same volume,
// published on 127.0.0.1 only; /healthz answers, tools/list answers the
// key and refuses no key, the server runs as uid 65532 and exits 0 on
// `docker stop`; the default command refuses plain HTTP off loopback.
//
// It needs a Docker engine (skipped, saying so, when `docker info` gets no
// answer). When the engine cannot pull the base images (no registry, as on
// machines without internet), the builder stage cannot run: the test then
// builds the binary with the builder stage's own command and runs the
// Dockerfile's final stage on scratch instead of distroless, and logs
// that the distroless base and the builder stage went untested.
func TestDockerImage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds an image")
	}
	if out, err := docker(t, 20*time.Second, "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("no Docker engine answers `docker info` (%v: %s); the image was not built or run", err, out)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(dockerfile), dockerBuildCmd) {
		t.Fatalf("the Dockerfile no longer builds with %s; update dockerBuildCmd and this test", dockerBuildCmd)
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	name := "mandate-test-" + hex.EncodeToString(suffix)
	image := name + ":latest"
	t.Cleanup(func() { docker(t, time.Minute, "rmi", "-f", image) })

	out, err := docker(t, 15*time.Minute, "build", "-t", image, root)
	switch {
	case err == nil:
		t.Logf("built %s from the Dockerfile", image)
	case pullFailed(out):
		t.Logf("the engine cannot pull the base images (%s); testing the final stage on scratch with a binary built by the builder stage's command",
			lastLine(out))
		localImage(t, root, string(dockerfile), image)
	default:
		t.Fatalf("docker build: %v\n%s", err, out)
	}

	vol := name + "-data"
	if out, err := docker(t, time.Minute, "volume", "create", vol); err != nil {
		t.Fatalf("docker volume create: %v %s", err, out)
	}
	t.Cleanup(func() { docker(t, time.Minute, "volume", "rm", "-f", vol) })

	// The default command listens on 0.0.0.0 without a certificate: refused.
	out, err = docker(t, time.Minute, "run", "--rm", "-v", vol+":/data", image)
	if code := exitCode(err); code != 2 || !strings.Contains(out, "--insecure-http") {
		t.Fatalf("the default command without TLS: exit %d, %q; want exit 2 naming --tls-cert and --insecure-http", code, out)
	}

	key, err := docker(t, time.Minute, "run", "--rm", "-v", vol+":/data", image, "agent", "key", "create", "demo-agent")
	if key = lineWith(key, "mk_"); err != nil || key == "" {
		t.Fatalf("agent key create in the container: %v %q", err, key)
	}
	id, err := docker(t, time.Minute, "run", "-d", "--name", name, "-v", vol+":/data", "-p", "127.0.0.1::8080", image, "serve", "--insecure-http")
	if err != nil {
		t.Fatalf("docker run serve: %v %s", err, id)
	}
	t.Cleanup(func() { docker(t, time.Minute, "rm", "-f", name) })
	logs := func() string { l, _ := docker(t, time.Minute, "logs", name); return l }
	addr, err := docker(t, time.Minute, "port", name, "8080/tcp")
	if addr = firstLine(addr); err != nil || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("docker port: %v %q", err, addr)
	}
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(base + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /healthz never answered 200 (%v)\n%s", err, logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	list := func(authz string) (int, string) {
		req, _ := http.NewRequest("POST", base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("tools/list: %v\n%s", err, logs())
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := list("Bearer " + key); code != 200 || !strings.Contains(body, `"refund_order"`) {
		t.Fatalf("tools/list with the key: %d %.300s\n%s", code, body, logs())
	}
	if code, _ := list(""); code != 401 {
		t.Fatalf("tools/list without a key: %d, want 401", code)
	}
	if uid, err := docker(t, time.Minute, "top", name, "-o", "uid,pid"); err != nil || !strings.Contains(uid, "65532") || strings.Contains(uid, "\n0") {
		t.Fatalf("serve runs as %q (%v), want uid 65532", uid, err)
	}
	if v, err := docker(t, time.Minute, "exec", name, "/usr/local/bin/mandate", "version"); err != nil || strings.Contains(v, "mandate dev") {
		t.Fatalf("mandate version in the image: %q %v", v, err)
	} else {
		t.Logf("image: %s", v)
	}
	if !strings.Contains(logs(), "WARNING: serving plain HTTP") {
		t.Fatalf("serve --insecure-http did not warn at start:\n%s", logs())
	}
	if out, err := docker(t, time.Minute, "stop", name); err != nil {
		t.Fatalf("docker stop: %v %s", err, out)
	}
	if code, err := docker(t, time.Minute, "inspect", name, "--format", "{{.State.ExitCode}}"); err != nil || code != "0" {
		t.Fatalf("exit code after docker stop (SIGTERM): %q %v, want 0\n%s", code, err, logs())
	}
}

// localImage builds image from the Dockerfile's final stage on scratch,
// with the binary built by the builder stage's command: what can be
// checked without the base images.
func localImage(t *testing.T, root, dockerfile, image string) {
	t.Helper()
	_, final, ok := strings.Cut(dockerfile, "\nFROM gcr.io/distroless/static-debian12:nonroot\n")
	if !ok {
		t.Fatalf("the Dockerfile's final stage is no longer distroless static nonroot; update this test")
	}
	ctx := t.TempDir()
	build := exec.Command("sh", "-c", `flags="-s -w"; `+strings.ReplaceAll(dockerBuildCmd, "/out/", ctx+"/"))
	build.Dir = root
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", dockerBuildCmd, err, b)
	}
	if b, err := exec.Command("file", filepath.Join(ctx, "mandate")).Output(); err == nil && !strings.Contains(string(b), "statically linked") {
		t.Fatalf("the builder's command made a binary that is not static: %s", b)
	}
	for _, d := range []string{"data", "etc/mandate"} {
		if err := os.MkdirAll(filepath.Join(ctx, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	final = "FROM scratch\n" + strings.ReplaceAll(strings.ReplaceAll(final, "--from=build ", ""), " /out/", " ")
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(final), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := docker(t, 10*time.Minute, "build", "-t", image, ctx); err != nil {
		t.Fatalf("docker build of the final stage on scratch: %v\n%s", err, out)
	}
}

// pullFailed reports whether a build failed for want of a base image
// rather than because of the Dockerfile.
func pullFailed(out string) bool {
	for _, s := range []string{"no such host", "pull access denied", "failed to resolve source metadata", "dial tcp", "TLS handshake timeout", "i/o timeout"} {
		if strings.Contains(out, s) {
			return true
		}
	}
	return false
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// lineWith is the first line of s that starts with prefix (stdout and
// stderr come interleaved), or "".
func lineWith(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return strings.TrimSpace(l) }

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}
