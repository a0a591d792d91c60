// s3cachefs.go drives the s3cachefs binary: mount, status, prefetch, drop,
// and the daemon's peak memory.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// fsMount is one s3cachefs mount made by the run.
type fsMount struct {
	bin        string // the s3cachefs binary that mounted it
	dir, cache string
	pid        int
	purge      bool // drop --purge when closed
	c          *closer
}

// fsStatus is the part of `status --json` the run reads.
type fsStatus struct {
	PID            int    `json:"pid"`
	ReadMode       string `json:"read_mode"`
	PassthroughOff string `json:"passthrough_off"`
	S3GetRequests  int64  `json:"s3_get_requests"`
	BytesFromSSD   int64  `json:"bytes_from_ssd"`
	Hits           int64  `json:"hits"` // reads (FUSE READs) served from SSD
	// Since issue 10 (zero from older builds).
	BlocksChecked int64    `json:"blocks_checked"`
	BlocksFresh   int64    `json:"blocks_fresh"` // since issue 11
	PassOpens     int64    `json:"passthrough_opens"`
	DaemonOpens   int64    `json:"daemon_opens"`
	FUSE          string   `json:"fuse"`
	Fallbacks     []string `json:"fallbacks"`
	// For the scale figure.
	Objects         int         `json:"objects"`
	CompleteObjects int         `json:"complete_objects"`
	UsedBytes       int64       `json:"used_bytes"`
	IndexCommits    int64       `json:"index_commits"`
	CacheSyncs      int64       `json:"cache_syncs"`
	Prefetch        []jobStatus `json:"prefetch"`
	// For the shared figure (issue 14).
	BytesFromS3  int64 `json:"bytes_from_s3"`
	TierBytes    int64 `json:"shared_cache_bytes"`
	TierRejected int64 `json:"shared_cache_rejected"`
	ClaimsWon    int64 `json:"shared_cache_claims_won"`
	ClaimsWaited int64 `json:"shared_cache_claims_waited"`
}

// jobStatus is a prefetch job in `status --json`.
type jobStatus struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// source is what every mount serves.
var source = fmt.Sprintf("s3://%s/%s", bucket, prefix)

// mountFS mounts the dataset on WORK/tmp/NAME-mnt with cache dir cache,
// through the proxy, with -mount-flags added.
func (b *bench) mountFS(ctx context.Context, name, cache string) (*fsMount, error) {
	return b.mountBin(ctx, b.bin, name, cache)
}

// mountBin is mountFS with the s3cachefs binary bin, and flags added
// after -mount-flags (so they win).
func (b *bench) mountBin(ctx context.Context, bin, name, cache string, flags ...string) (*fsMount, error) {
	return b.mountSource(ctx, bin, source, name, cache, flags...)
}

// mountSource is mountBin of src instead of the dataset.
func (b *bench) mountSource(ctx context.Context, bin, src, name, cache string, flags ...string) (*fsMount, error) {
	dir := b.path("tmp", name+"-mnt")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	args := append([]string{"mount", src, dir, "--cache-dir", cache,
		"--endpoint-url", b.proxy.Endpoint, "--force-path-style"}, b.cfg.mountFlags...)
	args = append(args, flags...)
	// Registered first: a mount command killed by Ctrl-C may already
	// have left a daemon and its mount behind.
	m := &fsMount{bin: bin, dir: dir, cache: cache}
	m.c = b.clean.add("s3cachefs mount "+dir, func() error { return b.unmountFS(m) })
	if _, err := b.runCmd(ctx, bin, args...); err != nil {
		return nil, fmt.Errorf("%w\ndaemon log:\n%s", err, logTail(cache))
	}
	st, err := b.fsStatus(ctx, m)
	if err != nil {
		return nil, err
	}
	m.pid = st.PID
	return m, nil
}

// dropFS unmounts m (deleting its cache with purge) and waits for the daemon.
func (b *bench) dropFS(m *fsMount, purge bool) error {
	m.purge = purge
	return m.c.close()
}

// unmountFS is m's closer: `drop`, else `drop --force`, then it waits for
// the daemon to exit. It runs on its own context so that it works after
// Ctrl-C too.
func (b *bench) unmountFS(m *fsMount) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{"drop"}
	if m.purge {
		args = append(args, "--purge")
	}
	var err error
	if isMounted(m.dir) {
		if _, err = b.runCmd(ctx, m.bin, append(args, m.dir)...); err != nil {
			_, err = b.runCmd(ctx, m.bin, append(args, "--force", m.dir)...)
		}
	}
	if m.pid > 0 {
		if werr := waitExit(ctx, m.pid); werr != nil && err == nil {
			err = werr
		}
	}
	if isMounted(m.dir) {
		return fmt.Errorf("%s still mounted after drop: %v", m.dir, err)
	}
	_ = os.Remove(m.dir)
	return err
}

// fsStatus runs `status --json` on m.
func (b *bench) fsStatus(ctx context.Context, m *fsMount) (fsStatus, error) {
	out, err := b.runCmd(ctx, m.bin, "status", "--mount", m.dir, "--json")
	if err != nil {
		return fsStatus{}, err
	}
	var st fsStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("status --json: %w", err)
	}
	return st, nil
}

// prefetch runs `prefetch --json` of folders on m, waits for the job and
// returns the job's own elapsed time. The command polls the job every
// --interval: a short one keeps its exit within 50 ms of the job's end.
func (b *bench) prefetch(ctx context.Context, m *fsMount, folders ...string) (time.Duration, error) {
	args := append([]string{"prefetch", "--mount", m.dir, "--json", "--interval", "50ms"}, folders...)
	out, err := b.runCmd(ctx, m.bin, args...)
	if err != nil {
		return 0, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var last struct {
		Elapsed float64 `json:"elapsed_seconds"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		return 0, fmt.Errorf("prefetch --json: %w", err)
	}
	return time.Duration(last.Elapsed * float64(time.Second)), nil
}

// peakRSS returns VmHWM of pid: the most resident memory it ever had.
func peakRSS(pid int) (int64, error) { return procStatusKB(pid, "VmHWM:") }

// procStatusKB reads the field (like "VmHWM:") of /proc/PID/status, in
// bytes.
func procStatusKB(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// waitExit waits until pid is gone or a zombie: daemons are reparented to
// PID 1, which may not reap them here.
func waitExit(ctx context.Context, pid int) error {
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		// The state follows the ")" that ends the command name.
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && strings.HasPrefix(string(stat[i:]), ") Z") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("daemon %d still running", pid)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// logTail is the end of the daemon log in cache, for errors.
func logTail(cache string) string {
	b, err := os.ReadFile(filepath.Join(cache, "s3cachefs.log"))
	if err != nil {
		return "(no log)"
	}
	return lastBytes(b, 3000)
}
