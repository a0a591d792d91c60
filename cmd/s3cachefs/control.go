package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"s3cachefs/blockcache"
	"s3cachefs/blockcache/prefetch"
	"s3cachefs/cmd/s3cachefs/api"
)

// controlPaths returns the socket and state file of the mount at mountpoint.
// They are named by a hash of the mountpoint, so any command that knows the
// mountpoint finds them.
func controlPaths(mountpoint string) (sock, state string) {
	sum := sha256.Sum256([]byte(mountpoint))
	base := filepath.Join(runtimeDir(), hex.EncodeToString(sum[:8]))
	return base + ".sock", base + ".json"
}

// mountState is written beside the socket so that `drop` can clean up after
// a daemon that died.
type mountState struct {
	PID        int    `json:"pid"`
	Source     string `json:"source"`
	Mountpoint string `json:"mountpoint"`
	CacheDir   string `json:"cache_dir"`
	FuseFD     int    `json:"fuse_fd,omitempty"` // served a handed-over /dev/fd/N
}

// control is the daemon's side of the control socket: HTTP over a unix
// socket, mode 0600. The requests and their JSON are those of package api.
type control struct {
	// Set once in listenControl.
	d     *daemon
	log   *slog.Logger
	http  *httpServer
	sock  string
	state string
}

// listenControl creates the socket and state file; serve starts answering.
func listenControl(cfg mountConfig, d *daemon, log *slog.Logger) (*control, error) {
	if _, err := makeRuntimeDir(); err != nil {
		return nil, err
	}
	sock, state := controlPaths(cfg.Name)
	if daemonAnswers(sock) {
		return nil, fmt.Errorf("mountpoint %s is already served by a running s3cachefs daemon", cfg.Name)
	}
	os.Remove(sock) // left by a daemon that died
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict control socket: %w", err)
	}
	st, _ := json.Marshal(mountState{PID: os.Getpid(), Source: cfg.Source.String(), Mountpoint: cfg.Name, CacheDir: cfg.CacheDir, FuseFD: cfg.FuseFD})
	if err := os.WriteFile(state, st, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("write state file: %w", err)
	}
	c := &control{d: d, log: log, sock: sock, state: state}
	c.http = newHTTPServer("control socket", ln, c.handler(), log)
	return c, nil
}

// serve starts answering requests; the daemon calls it once the mount is
// up, so no request ever sees a half-started daemon.
func (c *control) serve() { c.http.serve() }

// close waits for requests in progress, stops serving and removes the
// socket and state file.
func (c *control) close(ctx context.Context) error {
	err := c.http.close(ctx)
	os.Remove(c.sock)
	os.Remove(c.state)
	return err
}

// handler routes the requests package api lists. A path that is known
// with another method answers 405, any other 404, both with an api.Error
// (the mux's own answers are plain text).
func (c *control) handler() http.Handler {
	mux := http.NewServeMux()
	routes := []struct {
		method, path string
		h            http.HandlerFunc
	}{
		{"GET", "/status", func(w http.ResponseWriter, r *http.Request) { c.writeJSON(w, http.StatusOK, c.d.status()) }},
		{"POST", "/shutdown", func(w http.ResponseWriter, r *http.Request) { c.shutdown(w, r.URL.Query().Get("force") == "1") }},
		{"POST", "/prefetch", c.withPaths(func(ctx context.Context, req api.PathsRequest) (any, error) {
			p, err := c.d.jobs.StartShard(ctx, req.Paths, prefetch.Shard{Index: req.Shard, Count: req.Shards})
			return jobWire(p), err
		})},
		{"POST", "/verify", c.withPaths(func(ctx context.Context, req api.PathsRequest) (any, error) {
			rs, err := c.d.jobs.Verify(ctx, req.Paths, req.Deep)
			return reportsWire(rs), err
		})},
		{"POST", "/evict", c.withPaths(func(ctx context.Context, req api.PathsRequest) (any, error) {
			dropped, busy, err := c.d.jobs.Evict(ctx, req.Paths)
			return api.EvictReply{Dropped: dropped, Busy: busy}, err
		})},
		{"POST", "/unpin", c.withPaths(func(ctx context.Context, req api.PathsRequest) (any, error) {
			n, err := c.d.jobs.Unpin(ctx, req.Paths)
			return api.UnpinReply{Objects: n}, err
		})},
		{"GET", "/jobs", func(w http.ResponseWriter, r *http.Request) { c.writeJSON(w, http.StatusOK, jobsWire(c.d.jobs.List())) }},
		{"GET", "/jobs/{id}", c.withJob(func(id string) (any, error) {
			p, err := c.d.jobs.Get(id)
			return jobWire(p), err
		})},
		{"POST", "/jobs/{id}/cancel", c.withJob(func(id string) (any, error) {
			return api.Result{Result: "cancelled"}, c.d.jobs.Cancel(id)
		})},
	}
	for _, rt := range routes {
		mux.HandleFunc(rt.method+" "+rt.path, rt.h)
		// Less specific than the method's pattern: every other method.
		mux.HandleFunc(rt.path, func(w http.ResponseWriter, r *http.Request) {
			c.writeJSON(w, http.StatusMethodNotAllowed, api.Error{Error: fmt.Sprintf("%s does not take %s", r.URL.Path, r.Method)})
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.writeJSON(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no such request: %s %s", r.Method, r.URL.Path)})
	})
	return c.refuseUnclean(mux)
}

// refuseUnclean answers paths the mux would redirect (".", ".." or empty
// segments) itself: a job ID that cannot be one with 400, anything else
// with 404. No command sends such a path, and a redirect would send a
// client following it to another request.
func (c *control) refuseUnclean(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if rest, ok := strings.CutPrefix(p, "/jobs/"); ok {
			if id, _, _ := strings.Cut(rest, "/"); id != "" && !validJobID(id) {
				c.writeJSON(w, http.StatusBadRequest, api.Error{Error: "malformed job id"})
				return
			}
		}
		if path.Clean(p) != p {
			c.writeJSON(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no such request: %s %s", r.Method, p)})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// withJob checks the {id} of a job request, runs fn on it and replies.
func (c *control) withJob(fn func(id string) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !validJobID(id) {
			c.writeJSON(w, http.StatusBadRequest, api.Error{Error: "malformed job id"})
			return
		}
		v, err := fn(id)
		c.reply(w, v, err)
	}
}

// validJobID reports whether id looks like an ID Jobs.Start makes, a UTC
// time and a sequence number: letters, digits, '.', '-' and '_', starting
// with a letter or digit, at most 64 bytes. Anything else cannot name a
// job and is refused before it reaches the job table.
func validJobID(id string) bool {
	if id == "" || len(id) > 64 || !isAlnum(id[0]) && !(id[0] >= 'A' && id[0] <= 'Z') {
		return false
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r == '-' || r == '.' || r == '_') {
			return false
		}
	}
	return true
}

// maxRequestBody bounds a control request's body: a list of paths is far
// smaller, and anything bigger is refused unread rather than buffered.
const maxRequestBody = 1 << 20

// withPaths decodes an api.PathsRequest, runs fn on it and replies.
func (c *control) withPaths(fn func(context.Context, api.PathsRequest) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, code, err := decodePaths(http.MaxBytesReader(w, r.Body, maxRequestBody))
		if err != nil {
			c.writeJSON(w, code, api.Error{Error: err.Error()})
			return
		}
		v, err := fn(r.Context(), req)
		c.reply(w, v, err)
	}
}

// decodePaths reads exactly one api.PathsRequest with known fields and
// clean paths from body, or returns the HTTP status and error to refuse it
// with.
func decodePaths(body io.Reader) (api.PathsRequest, int, error) {
	var req api.PathsRequest
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	var tooBig *http.MaxBytesError
	if err == nil {
		switch _, terr := dec.Token(); {
		case errors.Is(terr, io.EOF):
		case errors.As(terr, &tooBig):
			err = terr
		default:
			err = errors.New("data after the JSON object")
		}
	}
	switch {
	case errors.As(err, &tooBig):
		return req, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", tooBig.Limit)
	case err != nil:
		return req, http.StatusBadRequest, fmt.Errorf("malformed request: %w", err)
	case len(req.Paths) == 0:
		return req, http.StatusBadRequest, errors.New("no paths given")
	case req.Shard < 0 || req.Shards < 0 || (req.Shards > 0 && req.Shard >= req.Shards) || (req.Shards == 0 && req.Shard != 0):
		return req, http.StatusBadRequest, fmt.Errorf("shard %d of %d: want 0 <= shard < shards", req.Shard, req.Shards)
	}
	for _, p := range req.Paths {
		if !cleanRelative(p) {
			return req, http.StatusBadRequest, fmt.Errorf("path %q is not a clean path relative to the mount root", p)
		}
	}
	return req, 0, nil
}

// cleanRelative reports whether p is "" (the mount root) or a path relative
// to the root as the commands send it: no leading "/", no empty, "." or
// ".." segments, no NUL.
func cleanRelative(p string) bool {
	if p == "" {
		return true
	}
	return path.Clean(p) == p && p != "." && p != ".." && !strings.HasPrefix(p, "/") &&
		!strings.HasPrefix(p, "../") && !strings.ContainsRune(p, 0)
}

// reply writes v, or err as an api.Error with a status that fits it.
func (c *control) reply(w http.ResponseWriter, v any, err error) {
	switch {
	case err == nil:
		c.writeJSON(w, http.StatusOK, v)
	case errors.Is(err, iofs.ErrInvalid):
		c.writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error()})
	case errors.Is(err, prefetch.ErrNoJob), errors.Is(err, iofs.ErrNotExist):
		c.writeJSON(w, http.StatusNotFound, api.Error{Error: err.Error()})
	case errors.Is(err, prefetch.ErrNoSpace):
		c.writeJSON(w, http.StatusInsufficientStorage, api.Error{Error: err.Error()})
	case errors.Is(err, prefetch.ErrJobEnded):
		c.writeJSON(w, http.StatusConflict, api.Error{Error: err.Error()})
	case errors.Is(err, blockcache.ErrClosed):
		c.writeJSON(w, http.StatusServiceUnavailable, api.Error{Error: "the daemon is stopping"})
	default:
		c.writeJSON(w, http.StatusInternalServerError, api.Error{Error: err.Error()})
	}
}

func (c *control) writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		c.log.Warn("control reply", "err", err)
	}
}

// shutdown unmounts (refusing while files are open unless forced) and
// replies once the cache and index are closed.
func (c *control) shutdown(w http.ResponseWriter, force bool) {
	if n := c.d.waitClosed(closeGrace); n > 0 && !force {
		c.writeJSON(w, http.StatusConflict, api.Error{Error: fmt.Sprintf(
			"%d file(s) are open under %s; close them or use --force", n, c.d.cfg.Mountpoint)})
		return
	}
	if err := c.d.unmount(force); err != nil {
		c.writeJSON(w, http.StatusConflict, api.Error{Error: fmt.Sprintf(
			"%s is busy (a process has a file or its working directory inside it); use --force: %v", c.d.cfg.Mountpoint, err)})
		return
	}
	<-c.d.stopped
	c.writeJSON(w, http.StatusOK, api.Result{Result: "stopped"})
}

// closeGrace is how long drop waits for files to close: the kernel tells
// the daemon a file was released a moment after close(2) returned, so a
// drop right after a read would otherwise see it still open.
const closeGrace = 2 * time.Second

// waitClosed waits up to grace for the open files to drop to zero and
// returns how many are still open. The fs layer has no event for this, so
// it polls; drop is rare and the wait short.
func (d *daemon) waitClosed(grace time.Duration) int64 {
	deadline := time.Now().Add(grace)
	for {
		n := d.root.OpenFiles()
		if n == 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}
