package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/attest"
	"github.com/mandatehq/mandate/storage"
	"golang.org/x/mod/sumdb/note"
)

// checkpointFlags are serve's flags for signing checkpoints of the trail.
type checkpointFlags struct {
	key   string
	every *time.Duration
	dir   string
	url   string
}

func (c *checkpointFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.key, "checkpoint-key", env("MANDATE_CHECKPOINT_KEY", ""), "sign checkpoints of the audit trail with this signer key file (mandate audit keygen); kept outside the database (env MANDATE_CHECKPOINT_KEY)")
	c.every = durationFlag(fs, "checkpoint-every", "MANDATE_CHECKPOINT_EVERY", time.Minute, "with --checkpoint-key, sign a checkpoint this often when records were added (env MANDATE_CHECKPOINT_EVERY)")
	fs.StringVar(&c.dir, "checkpoint-dir", env("MANDATE_CHECKPOINT_DIR", ""), "with --checkpoint-key, also write each checkpoint to SIZE.checkpoint and latest.checkpoint in this directory (env MANDATE_CHECKPOINT_DIR)")
	fs.StringVar(&c.url, "checkpoint-url", env("MANDATE_CHECKPOINT_URL", ""), "with --checkpoint-key, also POST each checkpoint (text/plain) to this URL, retried in the background (env MANDATE_CHECKPOINT_URL)")
}

// load checks the flags and reads the key before serve opens anything, so
// a missing, unreadable or invalid key stops serve at once.
func (c *checkpointFlags) load() (*checkpointer, error) {
	if c.key == "" {
		if c.dir != "" || c.url != "" {
			return nil, usageError{"serve: --checkpoint-dir and --checkpoint-url need --checkpoint-key"}
		}
		return nil, nil
	}
	s, err := attest.LoadSigner(c.key)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if c.url != "" {
		if u, err := url.Parse(c.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// Not repeated: its path or query may hold a token.
			return nil, usageError{"serve: --checkpoint-url (or MANDATE_CHECKPOINT_URL) is not an http or https URL with a host"}
		}
	}
	if c.dir != "" {
		if err := os.MkdirAll(c.dir, 0o755); err != nil {
			return nil, fmt.Errorf("serve: --checkpoint-dir: %w", err)
		}
	}
	return &checkpointer{signer: s, every: *c.every, dir: c.dir, url: c.url, retry: time.Second,
		publish: make(chan []byte, 1), client: &http.Client{Timeout: 10 * time.Second, CheckRedirect: mandate.RefuseRedirects}}, nil
}

// checkpointer signs a checkpoint of the trail every interval when records
// were added, stores it, and publishes it. It runs beside the tool calls and
// never blocks them: signing reads the tree, and storing is one small write.
type checkpointer struct {
	signer  note.Signer
	every   time.Duration
	dir     string
	url     string
	retry   time.Duration // first wait before retrying a POST; doubles up to 5 minutes
	publish chan []byte   // the newest checkpoint waiting to be POSTed
	client  *http.Client
	db      *storage.DB
	log     *slog.Logger
	signed  uint64 // the size last signed, by this process or another
}

// start runs the checkpointer until ctx ends; nil does nothing.
func (c *checkpointer) start(ctx context.Context, db *storage.DB, log *slog.Logger) {
	if c == nil {
		return
	}
	c.db, c.log = db, log
	if last, err := db.LatestCheckpoint(ctx, c.signer.Name()); err == nil {
		c.signed = last.Size
	}
	if c.url != "" {
		go c.poster(ctx)
	}
	log.Info("signing checkpoints of the audit trail", "origin", c.signer.Name(), "every", c.every.String())
	go func() {
		tick := time.NewTicker(c.every)
		defer tick.Stop()
		for {
			if err := c.once(ctx); err != nil && ctx.Err() == nil {
				log.Error("signing a checkpoint failed", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// once signs, stores and publishes a checkpoint if the tree grew since the
// last one this origin has. A tree that shrank, or grew from another
// history, is an error each time: signCheckpoint refuses it.
func (c *checkpointer) once(ctx context.Context) error {
	size, err := c.db.TreeSize(ctx)
	if err != nil {
		return err
	}
	if size < c.signed {
		return fmt.Errorf("refusing to sign a checkpoint: TRUNCATED: the tree holds %d records, but a checkpoint of %d was signed for %s: records %d to %d were removed; check the trail with `mandate audit verify --since-checkpoint` and the last published checkpoint", size, c.signed, c.signer.Name(), size+1, c.signed)
	}
	if size == c.signed {
		return nil
	}
	if last, err := c.db.LatestCheckpoint(ctx, c.signer.Name()); err == nil && last.Size >= size {
		c.signed = last.Size // another process signed it
		return nil
	}
	text, cp, err := signCheckpoint(ctx, c.db, c.signer)
	if err != nil {
		return err
	}
	c.signed = cp.Size
	c.log.Info("signed a checkpoint", "origin", cp.Origin, "size", cp.Size)
	if c.dir != "" {
		if err := writeCheckpointFiles(c.dir, cp.Size, text); err != nil {
			c.log.Error("writing a checkpoint file failed", "dir", c.dir, "err", err)
		}
	}
	if c.url != "" {
		// Only the newest waits: it proves everything an older one would.
		select {
		case <-c.publish:
		default:
		}
		c.publish <- text
	}
	return nil
}

// writeCheckpointFiles writes SIZE.checkpoint and replaces latest.checkpoint
// whole (write, then rename), so a reader never sees half a checkpoint.
func writeCheckpointFiles(dir string, size uint64, text []byte) error {
	for _, name := range []string{strconv.FormatUint(size, 10) + ".checkpoint", "latest.checkpoint"} {
		tmp, err := os.CreateTemp(dir, ".checkpoint-*")
		if err != nil {
			return err
		}
		_, err = tmp.Write(text)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Chmod(tmp.Name(), 0o644)
		}
		if err == nil {
			err = os.Rename(tmp.Name(), filepath.Join(dir, name))
		}
		if err != nil {
			os.Remove(tmp.Name())
			return err
		}
	}
	return nil
}

// poster POSTs each checkpoint to the URL, retrying with backoff until it
// is accepted or a newer one replaces it.
func (c *checkpointer) poster(ctx context.Context) {
	for {
		var text []byte
		select {
		case <-ctx.Done():
			return
		case text = <-c.publish:
		}
		wait := c.retry
		for {
			err := c.post(ctx, text)
			if err == nil {
				break
			}
			c.log.Warn("publishing a checkpoint failed; retrying", "host", hostOf(c.url), "err", mandate.WithoutURL(err), "in", wait.String())
			select {
			case <-ctx.Done():
				return
			case newer := <-c.publish:
				text, wait = newer, c.retry
				continue
			case <-time.After(wait):
			}
			wait = min(wait*2, 5*time.Minute)
		}
	}
}

func (c *checkpointer) post(ctx context.Context, text []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(text))
	if err != nil {
		return fmt.Errorf("the checkpoint URL %s… cannot be used", mandate.URLHost(c.url))
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// hostOf is the host of a URL, for logs: a URL's path or query may hold a token.
func hostOf(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Host
	}
	return ""
}
