// Package pgtest runs a throwaway PostgreSQL cluster for tests: one per test
// binary, started on first use on 127.0.0.1 (a free port, its socket in its
// temporary directory), with one fresh database per test. Tests that need
// it are skipped with a message when PostgreSQL is not installed, and fail
// instead when MANDATE_REQUIRE_POSTGRES=1 (CI installs it and sets that), so
// a machine without it cannot pass CI by skipping.
//
// A package using it calls Main from its TestMain, which stops the cluster
// after the tests (pg_ctl stop -m immediate).
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Cluster is a running PostgreSQL server owned by this test binary.
type Cluster struct {
	Dir  string // temporary directory: data in Dir/data, socket in Dir
	Port int
	bin  string
}

var (
	once    sync.Once
	cluster *Cluster
	startEr error
	seq     atomic.Int64
)

// Required reports whether MANDATE_REQUIRE_POSTGRES=1 makes a missing
// PostgreSQL a failure rather than a skip.
func Required() bool { return os.Getenv("MANDATE_REQUIRE_POSTGRES") == "1" }

// binDir finds PostgreSQL's server binaries: pg_config --bindir, else the
// newest /usr/lib/postgresql/*/bin (Debian keeps initdb off PATH).
func binDir() string {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi < vj
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i]
		}
	}
	return ""
}

// Get returns the test binary's cluster, starting it on first use. It skips
// t when PostgreSQL is not installed (fails it if Required), and fails it
// when the cluster does not start.
func Get(t testing.TB) *Cluster {
	t.Helper()
	once.Do(func() { cluster, startEr = start() })
	if startEr == errNotInstalled {
		if Required() {
			t.Fatalf("PostgreSQL is required (MANDATE_REQUIRE_POSTGRES=1) but its binaries (initdb, pg_ctl) were not found: apt-get install -y postgresql")
		}
		t.Skip("PostgreSQL is not installed (no initdb): skipping the PostgreSQL run; apt-get install -y postgresql, or set MANDATE_REQUIRE_POSTGRES=1 to make this a failure")
	}
	if startEr != nil {
		t.Fatalf("start PostgreSQL: %v", startEr)
	}
	return cluster
}

// URL creates a fresh database for t and returns its URL, as the
// superuser postgres.
func URL(t testing.TB) string {
	t.Helper()
	c := Get(t)
	name := fmt.Sprintf("t%d_%s", seq.Add(1), strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "_")))
	if len(name) > 60 {
		name = name[:60]
	}
	c.Exec(t, c.URL("postgres"), `CREATE DATABASE `+pgx.Identifier{name}.Sanitize())
	return c.URL(name)
}

// URL is the address of database name as the superuser postgres.
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, name)
}

// Exec runs sql (one or more statements) at url, failing t on error.
func (c *Cluster) Exec(t testing.TB, url, sql string, args ...any) {
	t.Helper()
	if err := Exec(url, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// Exec runs sql at url and returns its error.
func Exec(url, sql string, args ...any) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// Main runs the tests and then stops the cluster if one was started; call
// it from TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	Stop()
	return code
}

// Stop stops the cluster, if started, and removes its files.
func Stop() {
	if cluster == nil {
		return
	}
	cluster.Close()
	cluster = nil
}

// Start starts a cluster of its own for a program that is not a test
// (bench/e2e's replicas phase), apart from the one Get shares among a test
// binary's tests; the caller stops it with Close.
func Start() (*Cluster, error) { return start() }

// CreateDatabase creates database name and returns its URL, as the
// superuser postgres: Start's counterpart of URL.
func (c *Cluster) CreateDatabase(name string) (string, error) {
	if err := Exec(c.URL("postgres"), `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", err
	}
	return c.URL(name), nil
}

// Close stops c at once (pg_ctl stop -m immediate: its data is thrown
// away) and removes its files.
func (c *Cluster) Close() {
	asPostgres(filepath.Join(c.bin, "pg_ctl"), "-D", filepath.Join(c.Dir, "data"), "stop", "-m", "immediate").Run()
	os.RemoveAll(c.Dir)
}

var errNotInstalled = fmt.Errorf("PostgreSQL is not installed")

// asPostgres runs a server binary as the postgres user when this process is
// root (PostgreSQL refuses to run as root), else as this user.
func asPostgres(name string, args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	return exec.Command(name, args...)
}

func start() (*Cluster, error) {
	bin := binDir()
	if bin == "" {
		return nil, errNotInstalled
	}
	// A short path: the socket's must fit in 107 bytes.
	dir, err := os.MkdirTemp("", "pgt")
	if err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs the postgres user to run the server: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := asPostgres(filepath.Join(bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres",
		"-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	// fsync off: a test cluster's data is thrown away, and durability is
	// not what these tests measure.
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200", port, dir)
	if out, err := asPostgres(filepath.Join(bin, "pg_ctl"), "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pg_ctl start: %v: %s\n%s", err, out, log)
	}
	return &Cluster{Dir: dir, Port: port, bin: bin}, nil
}
