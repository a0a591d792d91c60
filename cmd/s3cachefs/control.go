package main

import (
	"bytes"
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
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"s3cachefs/blockcache"
	"s3cachefs/blockcache/prefetch"
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
// socket, mode 0600.
type control struct {
	d       *daemon
	log     *slog.Logger
	srv     *http.Server
	ln      net.Listener
	sock    string
	state   string
	started bool          // serve was called; set before any request
	served  chan struct{} // closed when Serve returns
}

// listenControl creates the socket and state file and starts serving.
func listenControl(cfg mountConfig, d *daemon, log *slog.Logger) (*control, error) {
	if _, err := makeRuntimeDir(); err != nil {
		return nil, err
	}
	sock, state := controlPaths(cfg.Name)
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
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
	c := &control{d: d, log: log, sock: sock, state: state, ln: ln, served: make(chan struct{})}
	c.srv = &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second}
	return c, nil
}

// serve starts answering requests; the daemon calls it once the mount is
// up, so no request ever sees a half-started daemon.
func (c *control) serve() {
	c.started = true
	go func() {
		defer close(c.served)
		if err := c.srv.Serve(c.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.log.Error("control socket", "err", err)
		}
	}()
}

// close waits for requests in progress, stops serving and removes the
// socket and state file.
func (c *control) close(ctx context.Context) error {
	var err error
	if c.started {
		err = c.srv.Shutdown(ctx)
		<-c.served
	} else {
		err = c.ln.Close()
	}
	os.Remove(c.sock)
	os.Remove(c.state)
	return err
}

// ServeHTTP answers the control requests:
//
//	GET  /status                 statusReport
//	POST /shutdown[?force=1]     unmount and stop
//	POST /prefetch               start a job: prefetchRequest → prefetch.Progress
//	GET  /jobs, /jobs/ID         job progress
//	POST /jobs/ID/cancel         cancel a job
func (c *control) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, action, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/jobs/"), "/")
	isJob := strings.HasPrefix(r.URL.Path, "/jobs/") && id != ""
	switch {
	case r.URL.Path == "/status" && r.Method == http.MethodGet:
		c.writeJSON(w, http.StatusOK, c.d.status())
	case r.URL.Path == "/shutdown" && r.Method == http.MethodPost:
		c.shutdown(w, r.URL.Query().Get("force") == "1")
	case r.URL.Path == "/prefetch" && r.Method == http.MethodPost:
		c.prefetch(w, r)
	case r.URL.Path == "/verify" && r.Method == http.MethodPost:
		c.withPaths(w, r, func(ctx context.Context, req pathsRequest) (any, error) {
			return c.d.jobs.Verify(ctx, req.Paths, req.Deep)
		})
	case r.URL.Path == "/evict" && r.Method == http.MethodPost:
		c.withPaths(w, r, func(ctx context.Context, req pathsRequest) (any, error) {
			dropped, busy, err := c.d.jobs.Evict(ctx, req.Paths)
			return evictReply{Dropped: dropped, Busy: busy}, err
		})
	case r.URL.Path == "/unpin" && r.Method == http.MethodPost:
		c.withPaths(w, r, func(ctx context.Context, req pathsRequest) (any, error) {
			n, err := c.d.jobs.Unpin(ctx, req.Paths)
			return map[string]int{"objects": n}, err
		})
	case r.URL.Path == "/jobs" && r.Method == http.MethodGet:
		c.writeJSON(w, http.StatusOK, c.d.jobs.List())
	case isJob && !validJobID(id):
		c.writeJSON(w, http.StatusBadRequest, apiError{Error: "malformed job id"})
	case isJob && action == "" && r.Method == http.MethodGet:
		p, err := c.d.jobs.Get(id)
		c.reply(w, p, err)
	case isJob && action == "cancel" && r.Method == http.MethodPost:
		c.reply(w, map[string]string{"result": "cancelled"}, c.d.jobs.Cancel(id))
	case knownPath(r.URL.Path, isJob, action):
		c.writeJSON(w, http.StatusMethodNotAllowed, apiError{Error: fmt.Sprintf("%s does not take %s", r.URL.Path, r.Method)})
	default:
		c.writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no such request: %s %s", r.Method, r.URL.Path)})
	}
}

// knownPath reports whether path names a control request (with some
// method), so that a wrong method gets 405 rather than 404.
func knownPath(path string, isJob bool, action string) bool {
	switch path {
	case "/status", "/shutdown", "/prefetch", "/verify", "/evict", "/unpin", "/jobs":
		return true
	}
	return isJob && (action == "" || action == "cancel")
}

// validJobID reports whether id (non-empty) looks like an ID Jobs.Start
// makes, a UTC time and a sequence number: letters, digits, '.', '-' and
// '_', starting with a letter or digit. Anything else cannot name a job
// and is refused before it reaches the job table.
func validJobID(id string) bool {
	if len(id) > 64 || !isAlnum(id[0]) && !(id[0] >= 'A' && id[0] <= 'Z') {
		return false
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r == '-' || r == '.' || r == '_') {
			return false
		}
	}
	return true
}

// prefetch starts a job from the request body.
func (c *control) prefetch(w http.ResponseWriter, r *http.Request) {
	c.withPaths(w, r, func(ctx context.Context, req pathsRequest) (any, error) {
		return c.d.jobs.Start(ctx, req.Paths)
	})
}

// maxRequestBody bounds a control request's body: a list of paths is far
// smaller, and anything bigger is refused unread rather than buffered.
const maxRequestBody = 1 << 20

// withPaths decodes a pathsRequest, runs fn on it and replies.
func (c *control) withPaths(w http.ResponseWriter, r *http.Request, fn func(context.Context, pathsRequest) (any, error)) {
	req, code, err := decodePaths(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		c.writeJSON(w, code, apiError{Error: err.Error()})
		return
	}
	v, err := fn(r.Context(), req)
	c.reply(w, v, err)
}

// decodePaths reads exactly one pathsRequest with known fields and clean
// paths from body, or returns the HTTP status and error to refuse it with.
func decodePaths(body io.Reader) (pathsRequest, int, error) {
	var req pathsRequest
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

// reply writes v, or err as an apiError with a status that fits it.
func (c *control) reply(w http.ResponseWriter, v any, err error) {
	switch {
	case err == nil:
		c.writeJSON(w, http.StatusOK, v)
	case errors.Is(err, iofs.ErrInvalid):
		c.writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
	case errors.Is(err, prefetch.ErrNoJob), errors.Is(err, iofs.ErrNotExist):
		c.writeJSON(w, http.StatusNotFound, apiError{Error: err.Error()})
	case errors.Is(err, prefetch.ErrNoSpace):
		c.writeJSON(w, http.StatusInsufficientStorage, apiError{Error: err.Error()})
	case errors.Is(err, prefetch.ErrJobEnded):
		c.writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
	case errors.Is(err, blockcache.ErrClosed):
		c.writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "the daemon is stopping"})
	default:
		c.writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
	}
}

// apiError is the body of every failed control request.
type apiError struct {
	Error string `json:"error"`
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
		c.writeJSON(w, http.StatusConflict, apiError{Error: fmt.Sprintf(
			"%d file(s) are open under %s; close them or use --force", n, c.d.cfg.Mountpoint)})
		return
	}
	if err := c.d.unmount(force); err != nil {
		c.writeJSON(w, http.StatusConflict, apiError{Error: fmt.Sprintf(
			"%s is busy (a process has a file or its working directory inside it); use --force: %v", c.d.cfg.Mountpoint, err)})
		return
	}
	<-c.d.stopped
	c.writeJSON(w, http.StatusOK, map[string]string{"result": "stopped"})
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

// client talks to the daemon of one mountpoint.
type client struct {
	mountpoint string
	sock       string
	state      string
	http       *http.Client
}

func newClient(mountpoint string) *client {
	sock, state := controlPaths(mountpoint)
	return &client{
		mountpoint: mountpoint, sock: sock, state: state,
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				if err := privateRuntimeDir(filepath.Dir(sock)); err != nil {
					return nil, err
				}
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		}},
	}
}

// errNoDaemon means no daemon answers on the mountpoint's socket.
var errNoDaemon = errors.New("no s3cachefs daemon answers")

// noDaemon is the error for a mountpoint whose socket nobody answers on.
// A mount of another user has its socket in that user's runtime dir:
// that is said rather than taken for a daemon that died.
func (c *client) noDaemon() error {
	if m, ok, err := mountAt(c.mountpoint); err == nil && ok && m.Owner >= 0 && m.Owner != os.Geteuid() {
		return fmt.Errorf("%s is a mount of uid %d, whose daemon is found through that user's runtime dir: run the command as uid %d",
			c.mountpoint, m.Owner, m.Owner)
	}
	return fmt.Errorf("%w for %s", errNoDaemon, c.mountpoint)
}

// do sends one request and decodes a JSON reply into out.
func (c *client) do(ctx context.Context, method, path string, out any) error {
	return c.send(ctx, method, path, nil, out)
}

// post sends in as JSON and decodes the reply into out.
func (c *client) post(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.send(ctx, http.MethodPost, path, bytes.NewReader(b), out)
}

func (c *client) send(ctx context.Context, method, path string, in io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://s3cachefs"+path, in)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if ue := (*url.Error)(nil); errors.As(err, &ue) && errors.Is(err, errRuntimeDir) {
			return ue.Err
		}
		return c.noDaemon()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("daemon replied %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode reply: %w", err)
	}
	return nil
}

// readState reads the state file a daemon left for the mountpoint.
func (c *client) readState() (mountState, error) {
	var st mountState
	b, err := os.ReadFile(c.state)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("state file %s: %w", c.state, err)
	}
	return st, nil
}

// isOurs reports whether the mount table has an s3cachefs mount at path.
func isOurs(path string) (bool, error) {
	m, ok, err := mountAt(path)
	return ok && m.ours(), err
}
