package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"

	"s3cachefs/cmd/s3cachefs/api"
)

// client talks to the daemon of one mountpoint over its control socket:
// one method per request of package api.
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

// status asks for the daemon's figures.
func (c *client) status(ctx context.Context) (api.Status, error) {
	var r api.Status
	err := c.send(ctx, http.MethodGet, "/status", nil, &r)
	return r, err
}

// shutdown unmounts and stops the daemon; it returns once the daemon has
// closed its cache and index.
func (c *client) shutdown(ctx context.Context, force bool) error {
	path := "/shutdown"
	if force {
		path += "?force=1"
	}
	return c.send(ctx, http.MethodPost, path, nil, nil)
}

// prefetch starts a prefetch job of paths (relative to the mount root).
func (c *client) prefetch(ctx context.Context, paths []string, shard, shards int) (api.Job, error) {
	var j api.Job
	err := c.post(ctx, "/prefetch", api.PathsRequest{Paths: paths, Shard: shard, Shards: shards}, &j)
	return j, err
}

// job asks for the progress of a job.
func (c *client) job(ctx context.Context, id string) (api.Job, error) {
	var j api.Job
	err := c.send(ctx, http.MethodGet, "/jobs/"+url.PathEscape(id), nil, &j)
	return j, err
}

// cancel cancels a job.
func (c *client) cancel(ctx context.Context, id string) error {
	return c.send(ctx, http.MethodPost, "/jobs/"+url.PathEscape(id)+"/cancel", nil, nil)
}

// verify compares the cache with S3 for paths.
func (c *client) verify(ctx context.Context, paths []string, deep bool) ([]api.FolderReport, error) {
	var rs []api.FolderReport
	err := c.post(ctx, "/verify", api.PathsRequest{Paths: paths, Deep: deep}, &rs)
	return rs, err
}

// evict drops the cached data under paths.
func (c *client) evict(ctx context.Context, paths []string) (api.EvictReply, error) {
	var r api.EvictReply
	err := c.post(ctx, "/evict", api.PathsRequest{Paths: paths}, &r)
	return r, err
}

// unpin releases the prefetch pins under paths.
func (c *client) unpin(ctx context.Context, paths []string) (api.UnpinReply, error) {
	var r api.UnpinReply
	err := c.post(ctx, "/unpin", api.PathsRequest{Paths: paths}, &r)
	return r, err
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

// post sends in as JSON and decodes the reply into out.
func (c *client) post(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.send(ctx, http.MethodPost, path, bytes.NewReader(b), out)
}

// send sends one request and decodes a JSON reply into out (unless nil).
// A failed request returns the daemon's api.Error as the error.
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
		var e api.Error
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
