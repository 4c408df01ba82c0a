// Command e2e is Mandate's end-to-end benchmark: what an agent sees, over
// stdio, with the official Go SDK as the client.
//
//	go run ./bench/e2e                      # about a minute
//	go run ./bench/e2e -duration 5s -prefill 1000,100000
//	go run ./bench/e2e -only http           # Streamable HTTP vs stdio alone
//	go run ./bench/e2e -only replicas       # 1-3 processes: PostgreSQL vs SQLite
//	go run ./bench/e2e -only processes      # 4 processes vs 1 process, 4 callers
//	go run ./bench/e2e -only sequential     # one caller, 3 alternating rounds
//
// It builds `mandate` and a bare mcp-go server (bench/e2e/bare: the same
// embedded-store refund write, the same SQLite settings, no guard), imports a
// generated data set (one customer per order, so no limit trips) into a store
// for each, and drives both in the same run: refunds with 1, 4 and 16
// concurrent callers, get_order and a no-op tool sequentially, the floor's
// sequential refunds (the bare server committing one intent row durably
// before each refund, to a store of its own: what no guard can go below), four
// `mandate serve` processes sharing one database against one process with
// four callers, and refunds with an idempotency key after N recorded actions
// against refunds without one. Then guarded refunds over Streamable HTTP
// (`mandate serve --http` on 127.0.0.1, 1 and 64 agents each with its own
// API key and session) against the stdio server with as many callers, on
// the same files. (`-only replicas`, not part of the default run because it
// needs PostgreSQL's server binaries: guarded refunds from a fixed number of
// callers spread over 1, 2 and 3 `mandate serve` processes sharing one
// PostgreSQL database, in a throwaway cluster on 127.0.0.1, against the same
// processes sharing one SQLite file; see replicas.go.) It prints the tables
// (medians, p99, calls/s, ratios), then checks that each store and Mandate's
// audit trail hold exactly the refunds the clients saw succeed, and exits 1
// if they do not.
//
// Everything runs in a temporary directory, over pipes to child processes;
// only the HTTP phase listens, on a loopback port (and the replicas phase's
// PostgreSQL, stopped and removed at its end, also on Ctrl-C). Compare
// ratios within one run: absolute times on a shared machine mean little.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type config struct {
	duration time.Duration // per measured phase
	prefill  []int         // recorded actions before each keyed/unkeyed comparison
	orders   int
	workers  int // bare server's stdio worker pool; 0 = what mandate serve uses
	keep     bool
	only     string // "" for every phase, "http" for the HTTP comparison alone, "replicas" for 1-3 processes on PostgreSQL vs SQLite, "processes" for 4 processes vs 1, "sequential" for one caller alone

	replicaCallers int // concurrent callers spread over the processes in the replicas phase
}

func main() {
	var c config
	flag.DurationVar(&c.duration, "duration", 2*time.Second, "how long each measured phase runs")
	prefill := flag.String("prefill", "1000", "comma-separated numbers of recorded actions before comparing keyed with unkeyed refunds, e.g. 1000,100000")
	flag.IntVar(&c.orders, "orders", 0, "orders (and customers) in each generated store; 0 sizes it from -duration")
	flag.IntVar(&c.workers, "bare-workers", 32, "the bare server's stdio worker pool; keep it equal to mandate serve's so only the guard differs")
	flag.BoolVar(&c.keep, "keep", false, "keep the temporary directory (databases, logs) and print its path")
	flag.StringVar(&c.only, "only", "", "run only these phases: http (refunds over Streamable HTTP from 1 and 64 agents vs over stdio), replicas (1, 2 and 3 mandate serve processes on one PostgreSQL vs on one SQLite file), processes (4 mandate serve processes × 1 caller vs 1 process × 4 callers, on one SQLite file), sequential (one caller's refunds and get_order calls, Mandate and the bare server alternating, 3 rounds)")
	flag.IntVar(&c.replicaCallers, "replica-callers", 12, "concurrent callers spread over the processes in the replicas phase (the same for every N)")
	flag.Parse()
	for _, s := range strings.Split(*prefill, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 {
			fmt.Fprintf(os.Stderr, "e2e: -prefill %q: want comma-separated counts\n", *prefill)
			os.Exit(2)
		}
		c.prefill = append(c.prefill, n)
	}
	if c.only != "" && c.only != "http" && c.only != "replicas" && c.only != "processes" && c.only != "sequential" {
		fmt.Fprintf(os.Stderr, "e2e: -only %q: the choices are http, replicas, processes and sequential\n", c.only)
		os.Exit(2)
	}
	if c.replicaCallers < 1 {
		fmt.Fprintf(os.Stderr, "e2e: -replica-callers %d: want at least 1\n", c.replicaCallers)
		os.Exit(2)
	}
	if c.orders == 0 && c.only == "replicas" {
		// Each run refunds its own copy of the store: enough for ~3,000
		// refunds/s over its warm-up and measured time.
		c.orders = int((c.duration.Seconds()+0.5)*3000) + 1000
	}
	if c.orders == 0 {
		// Enough for ~2,000 refunds/s in every refund phase of one side.
		c.orders = int(c.duration.Seconds()*2000)*(9+2*len(c.prefill)) + 1000
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: FAIL:", err)
		os.Exit(1)
	}
}

// moduleRoot finds the main module's directory, so the tool runs from
// anywhere inside the repository.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run it inside the mandate repository")
	}
	return filepath.Dir(mod), nil
}

func run(c config) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "mandate-e2e-")
	if err != nil {
		return err
	}
	if c.keep {
		fmt.Fprintln(os.Stderr, "e2e: files in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	say := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", a...) }

	say("building mandate and the bare server")
	env := &bench{dir: dir, cfg: c, say: say}
	env.mandateBin = filepath.Join(dir, "mandate")
	env.bareBin = filepath.Join(dir, "bare")
	for _, b := range [][2]string{{env.mandateBin, "./cmd/mandate"}, {env.bareBin, "./bench/e2e/bare"}} {
		cmd := exec.Command("go", "build", "-o", b[0], b[1])
		cmd.Dir, cmd.Stderr = root, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", b[1], err)
		}
	}
	stores := "two stores"
	if env.measuresFloor() {
		stores = "three stores (Mandate, bare, floor)"
	}
	say("generating %d orders and importing them into %s", c.orders, stores)
	if err := env.setup(root); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	return env.runAll(ctx)
}
