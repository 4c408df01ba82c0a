package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/storage"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// bench is one run: the binaries, the files and the orders handed out.
type bench struct {
	dir, mandateBin, bareBin string
	cfg                      config
	say                      func(string, ...any)

	mandateDB, mandateStore, bareStore string
	modelPath, policyPath              string
	// The floor: the bare server with one durable intent commit before
	// each refund (bare/main.go), on a store of its own.
	floorStore, floorIntent string

	// Orders are handed out once each, per side, so every refund is the
	// first on its order and its customer.
	mandateNext, bareNext, floorNext atomic.Int64

	mu      sync.Mutex
	refunds map[string]map[string]bool // side -> action ids the client saw succeed
}

// benchAgent is the identity every mandate serve process acts as. Its role
// has the shipped rules' shape without the per-agent 24 h refund cap, which
// a benchmark of thousands of refunds would trip (and which would then
// measure approvals, not the guard).
const benchAgent = "bench-agent"

const benchRules = `
# bench/e2e: an agent allowed many small refunds; the limit attribute is still
# counted and tested on every call, at a cap the benchmark does not reach.
p, bench_agent, get_order, true, allow
p, bench_agent, refund_order, amount <= 50.00, allow
p, bench_agent, refund_order, amount > 50.00, require_approval
p, bench_agent, refund_order, agent_refunded_24h + amount > 100000000.00, require_approval
g, bench-agent, bench_agent
`

func (b *bench) setup(root string) error {
	b.refunds = map[string]map[string]bool{"mandate": {}, "bare": {}, "floor": {}}
	b.mandateDB = filepath.Join(b.dir, "mandate.db")
	b.mandateStore = filepath.Join(b.dir, "mandate-store.db")
	b.bareStore = filepath.Join(b.dir, "bare-store.db")
	b.floorStore = filepath.Join(b.dir, "floor-store.db")
	b.floorIntent = filepath.Join(b.dir, "floor-intent.db")
	b.modelPath = filepath.Join(b.dir, "model.conf")
	b.policyPath = filepath.Join(b.dir, "policy.csv")
	model, err := os.ReadFile(filepath.Join(root, "model.conf"))
	if err != nil {
		return err
	}
	pol, err := os.ReadFile(filepath.Join(root, "policy.csv"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.modelPath, model, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(b.policyPath, append(pol, benchRules+httpAgentRules()...), 0o644); err != nil {
		return err
	}
	data := filepath.Join(b.dir, "data.json")
	if err := os.WriteFile(data, dataset(b.cfg.orders), 0o644); err != nil {
		return err
	}
	stores := []string{b.mandateStore, b.bareStore}
	if b.measuresFloor() {
		stores = append(stores, b.floorStore)
	}
	for _, st := range stores {
		out, err := exec.Command(b.mandateBin, "store", "import", "--store", st, data).CombinedOutput()
		if err != nil {
			return fmt.Errorf("mandate store import: %v\n%s", err, out)
		}
	}
	return nil
}

// dataset is n customers with one delivered order each, all years old, each
// order 100.00 USD with nothing refunded yet.
func dataset(n int) []byte {
	var f store.ImportFile
	for i := range n {
		cid := fmt.Sprintf("cus_b%06d", i)
		f.Customers = append(f.Customers, store.CustomerRecord{ID: cid, Name: fmt.Sprintf("Customer %d", i),
			Email: fmt.Sprintf("c%d@example.com", i), Phone: "+1 202 555 0100", ShippingAddress: "1 Main Street",
			CreatedAt: "2020-01-01T00:00:00Z"})
		f.Orders = append(f.Orders, store.OrderRecord{ID: orderID(i), CustomerID: cid, Status: "delivered", Currency: "USD",
			Total: "100.00", Refunded: "0.00", CreatedAt: "2021-01-01T00:00:00Z"})
	}
	out, err := json.Marshal(f)
	if err != nil {
		panic(err)
	}
	return out
}

func orderID(i int) string { return fmt.Sprintf("ord_b%06d", i) }

// measuresFloor reports whether this run measures the floor: the default
// run and -only sequential do.
func (b *bench) measuresFloor() bool { return b.cfg.only == "" || b.cfg.only == "sequential" }

// server is one child process with an official-SDK session.
type server struct {
	side    string // "mandate", "bare" or "floor"
	session *sdk.ClientSession
	stderr  *bytes.Buffer
	pid     int // the child process, whose CPU time measure reads
}

// start launches a mandate serve (side "mandate") or the bare server and
// connects the official Go SDK client to it over its stdin and stdout.
func (b *bench) start(ctx context.Context, side string) (*server, error) {
	switch side {
	case "mandate":
		return b.startOn(ctx, side, b.mandateDB, b.mandateStore)
	case "floor":
		return connect(ctx, side, exec.Command(b.bareBin, "--store", b.floorStore, "--intent", b.floorIntent, "--workers", fmt.Sprint(b.cfg.workers)))
	}
	return connect(ctx, side, exec.Command(b.bareBin, "--store", b.bareStore, "--workers", fmt.Sprint(b.cfg.workers)))
}

// startOn starts one `mandate serve` on db and store, as the bench agent,
// and connects the official Go SDK client to it over stdio.
func (b *bench) startOn(ctx context.Context, side, db, store string) (*server, error) {
	return connect(ctx, side, exec.Command(b.mandateBin, "serve", "--agent", benchAgent, "--db", db, "--store", store,
		"--model", b.modelPath, "--policy", b.policyPath))
}

// connect starts cmd and connects the official Go SDK client to it over
// its stdin and stdout, keeping its stderr for the report.
func connect(ctx context.Context, side string, cmd *exec.Cmd) (*server, error) {
	cmd.Env = append(os.Environ(), "MANDATE_LOG_LEVEL=info")
	s := &server{side: side, stderr: &bytes.Buffer{}}
	cmd.Stderr = &lockedWriter{w: s.stderr}
	client := sdk.NewClient(&sdk.Implementation{Name: "mandate-e2e-bench", Version: "1"}, nil)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	session, err := client.Connect(cctx, &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: connect: %v\n%s", side, err, s.stderr)
	}
	s.session = session
	if cmd.Process != nil {
		s.pid = cmd.Process.Pid
	}
	return s, nil
}

// lockedWriter lets the child's stderr be read while it is written.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefillTo records executed refund actions, each with an idempotency key,
// directly in mandate.db until it holds n recorded actions (it returns how many it holds): the history a
// keyed refund's lookup must not slow down with. They are written through
// the storage package as the guard writes them (attempt and chain), by an
// agent of their own so the checks can tell them apart.
func (b *bench) prefillTo(ctx context.Context, n int) (int, error) {
	db, err := storage.Open(ctx, b.mandateDB)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	count := 0
	if err := db.Records(ctx, storage.Filter{}, func(r *storage.Record) error {
		if r.Phase == storage.PhaseAttempt {
			count++
		}
		return nil
	}); err != nil {
		return 0, err
	}
	todo := n - count
	if todo <= 0 {
		return count, nil
	}
	b.say("recording %d more actions (history: %d)", todo, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 256)
	for range 256 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(todo) {
					return
				}
				id := fmt.Sprintf("act_prefill_%d_%d", count, i)
				args := []byte(fmt.Sprintf(`{"amount":"1.00","order_id":"ord_x%d","reason":"history"}`, i))
				a := &storage.Action{ID: id, Agent: prefillAgent, Tool: "refund_order", Args: args, Decision: "allow",
					Status: storage.StatusExecuted, IdempotencyKey: "key-" + id, Currency: "USD", AmountMinor: 100}
				rec := &storage.Record{Agent: prefillAgent, Tool: "refund_order", Args: args, Decision: "allow", Outcome: storage.StatusExecuted}
				if err := db.RecordAttempt(ctx, a, rec); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return n, <-errs
}

// prefillAgent records the history; the checks ignore its actions.
const prefillAgent = "bench-history"
