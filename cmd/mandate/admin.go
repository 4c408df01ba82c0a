package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/mandatehq/mandate/admin"
	"github.com/mandatehq/mandate/storage"
	"golang.org/x/crypto/bcrypt"
)

func runAdmin(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "user" {
		if len(args) < 2 || args[1] != "add" {
			return usageError{"admin user: use `mandate admin user add NAME` (password on stdin or in MANDATE_ADMIN_PASSWORD)"}
		}
		return runAdminUserAdd(ctx, args[2:], stdin, stdout, stderr)
	}
	return runAdminServe(ctx, args, stdout, stderr)
}

// minPassword is the shortest password accepted for an approver.
const minPassword = 10

func runAdminUserAdd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("admin user add", "mandate admin user add NAME [--db FILE]   (password: first line of stdin, or MANDATE_ADMIN_PASSWORD)", stderr)
	dbPath := dbFlag(fs)
	name, err := parseWithID(fs, args)
	if err != nil {
		return err
	}
	password := env("MANDATE_ADMIN_PASSWORD", "")
	if password == "" {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		password = strings.TrimRight(line, "\r\n")
	}
	if len(password) < minPassword {
		return usageError{fmt.Sprintf("admin user add: the password must be at least %d characters; pipe it on stdin or set MANDATE_ADMIN_PASSWORD", minPassword)}
	}
	if len(password) > 72 {
		return usageError{"admin user add: the password is longer than bcrypt's 72 bytes"}
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	db, err := storage.Open(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.AddUser(ctx, name, string(hash)); err != nil {
		return fmt.Errorf("admin user add: %w", err)
	}
	fmt.Fprintf(stdout, "added %s to %s; what they may approve is set by the approve_* rules for %s in policy.csv\n", name, *dbPath, name)
	return nil
}

func runAdminServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("admin", "mandate admin [--listen 127.0.0.1:8080] [--db FILE --store FILE --model FILE --policy FILE]", stderr)
	listen := fs.String("listen", env("MANDATE_ADMIN_LISTEN", "127.0.0.1:8080"), "address to serve the admin pages on (env MANDATE_ADMIN_LISTEN)")
	dbPath := dbFlag(fs)
	storePath := fs.String("store", env("MANDATE_STORE", "store.db"), "the store approved actions run against (env MANDATE_STORE)")
	backendFile := fs.String("backend", env("MANDATE_BACKEND", ""), backendFlagHelp)
	secure := fs.Bool("secure-cookies", false, "mark cookies Secure: set when a TLS proxy serves these pages")
	level := fs.String("log-level", env("MANDATE_LOG_LEVEL", "info"), "debug, info, warn or error (env MANDATE_LOG_LEVEL)")
	var pf policyFlags
	pf.register(fs)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	log, err := newLogger(stderr, *level, "text")
	if err != nil {
		return err
	}
	ad, err := openApprovalDeps(ctx, *dbPath, *storePath, *backendFile, &pf, stderr)
	if err != nil {
		return err
	}
	defer ad.Close()
	ad.deps.Logger = log
	srv, err := admin.New(admin.Config{Deps: ad.deps, Secure: *secure, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	go srv.ExpireLoop(ctx, time.Minute)
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}()
	fmt.Fprintf(stdout, "Mandate admin on http://%s/ (db %s, store %s)\n", ln.Addr(), *dbPath, *storePath)
	log.Info("serving admin pages", "addr", ln.Addr().String(), "db", *dbPath, "store", *storePath)
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
