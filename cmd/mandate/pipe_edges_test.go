package main

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// pipeServeFast is pipeServe with a 1 s backend timeout, so that serve's
// patience with unanswered calls is 4*1s+10s = 14 s.
func pipeServeFast(t *testing.T, script string) (stdout, stderr string, took time.Duration) {
	t.Helper()
	return pipeServe(t, script, "--backend-timeout", "1s", "--recover-after", "3s")
}

const pipeInit = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"pipe","version":"1"}}}` + "\n" +
	`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n"

// TestPipedIDFormsDoNotHoldExit: mcp-go writes a request's id back in its
// own form (1.0 as 1, an HTML character escaped, a big integer rounded);
// serve still matches each answer to its call and exits at once, rather
// than hold the end of input for its whole patience and warn of calls
// "without an answer".
func TestPipedIDFormsDoNotHoldExit(t *testing.T) {
	for _, id := range []string{`1.0`, `"a<b"`, `"caf\u00e9"`, `12345678901234567891`} {
		t.Run(id, func(t *testing.T) {
			out, errOut, took := pipeServeFast(t, pipeInit+
				`{"jsonrpc":"2.0","id":`+id+`,"method":"tools/call","params":{"name":"get_order","arguments":{"order_id":"ord_1001"}}}`+"\n")
			if strings.Count(out, "\n") < 2 {
				t.Fatalf("the call was not answered:\n%s", out)
			}
			if took > 8*time.Second || strings.Contains(errOut, "stopped waiting") {
				t.Fatalf("serve took %s to exit after an answered call with id %s\nstderr:\n%s", took, id, errOut)
			}
		})
	}
}

// TestPipedLastLineWithoutNewline: mcp-go reads a last line that has no
// newline together with the EOF and drops it; serve hands it a newline
// first, so the call runs and is answered.
func TestPipedLastLineWithoutNewline(t *testing.T) {
	out, errOut, _ := pipeServeFast(t, pipeInit+
		`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"refund_order","arguments":{"order_id":"ord_1001","amount":"1.00","reason":"no newline"}}}`)
	if !strings.Contains(out, `"id":7`) {
		t.Fatalf("the last call (no trailing newline) was not answered\nstdout:\n%s\nstderr:\n%s", out, errOut)
	}
}

// TestServerRequestIsNotAnAnswer: mcp-go writes its requests to the client
// (sampling, elicitation, roots/list) with the id before the method; such
// a request must not count as the answer to the client's tools/call with
// the same id, or the end of input would be let through while that call
// is still queued.
func TestServerRequestIsNotAnAnswer(t *testing.T) {
	e := &eofReader{r: strings.NewReader(""), ctx: context.Background(), patience: time.Second, log: slog.New(slog.DiscardHandler)}
	e.note([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_order"}}` + "\n"))
	w := newAnswerWriter(context.Background(), io.Discard, e)
	w.Write([]byte(`{"jsonrpc":"2.0","id":1,"method":"roots/list"}` + "\n"))
	e.mu.Lock()
	left := len(e.calls)
	e.mu.Unlock()
	if left != 1 {
		t.Fatalf("a server-to-client request with id 1 was taken for the answer to tools/call 1 (%d calls left, want 1)", left)
	}
}

// TestLongInputLineIsCut: a line past maxLine reaches mcp-go cut at the
// limit (it reads a line whole, with no limit of its own: a 100 MB line
// held over a gigabyte), whichever way the reads split it; the lines
// around it pass whole.
func TestLongInputLineIsCut(t *testing.T) {
	long := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_order","arguments":{"order_id":"` + strings.Repeat("x", 3*maxLine) + `"}}}`
	in := "first\n" + long + "\n" + "last\n"
	for _, chunk := range []int{1 << 10, 4096, maxLine, 5 * maxLine} {
		e := &eofReader{r: iotest.HalfReader(strings.NewReader(in)), ctx: context.Background(), patience: time.Second, log: slog.New(slog.DiscardHandler)}
		var out []byte
		buf := make([]byte, chunk)
		for {
			n, err := e.Read(buf)
			out = append(out, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		want := "first\n" + long[:maxLine] + "\n" + "last\n"
		if string(out) != want {
			t.Fatalf("chunk %d: %d bytes out, want %d: the long line cut at %d bytes and the others whole", chunk, len(out), len(want), maxLine)
		}
	}
}

// TestPipedLongLineThenACall: serve answers a line past the limit with a
// parse error and goes on to answer the next call.
func TestPipedLongLineThenACall(t *testing.T) {
	out, errOut, _ := pipeServeFast(t, pipeInit+
		`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get_order","arguments":{"order_id":"`+strings.Repeat("y", 2*maxLine)+`"}}}`+"\n"+
		`{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"get_order","arguments":{"order_id":"ord_1001"}}}`+"\n")
	if !strings.Contains(out, `"code":-32700`) || !strings.Contains(out, `"id":6`) || !strings.Contains(out, "ord_1001") {
		t.Fatalf("want a parse error for the long line and an answer to call 6\nstdout:\n%.2000s\nstderr:\n%s", out, errOut)
	}
	if !strings.Contains(errOut, "input line longer than the limit") {
		t.Fatalf("the cut is not logged:\n%s", errOut)
	}
}

// TestRequestKeyShortcut: the ids requestKey takes as they are written
// are exactly those the round trip through mcp-go's decoding leaves alone.
func TestRequestKeyShortcut(t *testing.T) {
	ids := []string{`1`, `7`, `42`, `123456789012345`, `1234567890123456`, `9007199254740993`, `0`, `01`, `-1`, `1.0`, `1e3`, ` 1`,
		`"abc"`, `"a-b_C9"`, `""`, `"a<b"`, `"a&b"`, `"a\u0041"`, `"é"`, `"a b"`, `"a\"b"`, `null`, `true`, `{}`, `[1]`}
	for n := range 2000 { // and every small number, as most clients count
		ids = append(ids, strconv.Itoa(n), strconv.Quote("req-"+strconv.Itoa(n)))
	}
	shortcuts := 0
	for _, id := range ids {
		want := roundTripKey([]byte(id))
		if got := requestKey([]byte(id)); got != want {
			t.Errorf("requestKey(%s) = %s; the round trip gives %s", id, got, want)
		}
		if plainID([]byte(id)) {
			shortcuts++
		}
	}
	if shortcuts < 4000 {
		t.Errorf("only %d of %d ids took the shortcut", shortcuts, len(ids))
	}
}
