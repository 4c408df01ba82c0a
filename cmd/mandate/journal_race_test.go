package main

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// journalRaceRounds is how many servers TestJournalCreateRace starts while
// journals are being imported: the window it probes is a few microseconds
// wide; before it was closed, one start in twenty or thirty hit it (a
// failed start or a removed journal), so the test caught it in most runs.
const journalRaceRounds = 30

// TestJournalCreateRace starts servers while another process imports the
// database's unheld journals in a loop (what every starting server does
// once). A starting server's journal exists unlocked between its creation
// and its flock; an import must not take it then, or the server would
// journal into a removed file, and a lookup answered and then lost with a
// kill could never be imported. Each server answers a few lookups and is
// killed right after the last; every answered lookup must end up in the
// trail exactly once.
func TestJournalCreateRace(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills many servers")
	}
	dbPath, storePath, db := journalFiles(t)
	var answered []string
	next := 0
	for round := range journalRaceRounds {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			for ctx.Err() == nil {
				db.ImportLookupJournals(context.Background())
			}
		})
		srv := &faultServer{stderr: &syncBuffer{}}
		c, err := client.NewStdioMCPClientWithOptions(bin, faultEnv,
			[]string{"serve", "--agent", "senior-bot", "--db", dbPath, "--store", storePath},
			transport.WithCommandFunc(func(ctx context.Context, command string, env, args []string) (*exec.Cmd, error) {
				cmd := exec.CommandContext(ctx, command, args...)
				cmd.Env = childEnv(env)
				cmd.Stderr = srv.stderr
				srv.cmd = cmd
				return cmd, nil
			}))
		if err != nil {
			t.Fatal(err)
		}
		srv.c = c
		t.Cleanup(func() { c.Close() })
		ictx, icancel := context.WithTimeout(context.Background(), 15*time.Second)
		init := mcp.InitializeRequest{}
		init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
		_, err = c.Initialize(ictx, init)
		icancel()
		cancel()
		wg.Wait()
		if err != nil {
			t.Fatalf("round %d: the server did not start while another process imported journals: %v\n%s", round, err, strings.TrimSpace(srv.stderr.String()))
		}
		if js := journals(t, dbPath); len(js) != 1 {
			t.Errorf("round %d: a live server has journals %v, want its own: another process's import removed it", round, js)
		}
		for j := range 3 {
			var kill func()
			if j == 2 {
				kill = func() { srv.kill(t) }
			}
			answered = append(answered, lookup(t, srv, next, kill))
			next++
		}
	}
	if _, err := db.ImportLookupJournals(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkTrail(t, db, answered, "after the last import")
}
