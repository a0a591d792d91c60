package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"s3cachefs/cmd/s3cachefs/api"
	"s3cachefs/test/s3server"
)

// env is one S3 server with a counting proxy in front, the bucket, and a
// runtime dir of its own for control sockets. Daemons talk to the proxy;
// setup talks to the server directly, so it is never counted.
type env struct {
	srv        *s3server.Server
	proxy      *s3server.Proxy
	runtimeDir string
	home       string   // empty $HOME: no ~/.aws of the machine leaks in
	extraEnv   []string // more variables for every process, set before the first
}

// newEnv starts a server and proxy for t and creates the bucket.
func newEnv(t *testing.T) *env {
	t.Helper()
	srv := s3server.Start(t)
	e := &env{srv: srv, proxy: srv.NewProxy(t), runtimeDir: shortTempDir(t), home: t.TempDir()}
	srv.CreateBucket(t, bucket)
	return e
}

// shortTempDir is a folder removed when t ends, whose path is short
// whatever t's name (a subtest's t.TempDir() may make control socket paths
// longer than a unix socket takes).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// childEnv is the environment of every process a test starts: the
// machine's, minus anything AWS or s3cachefs, plus the server's
// credentials and the test's runtime dir.
func (e *env) childEnv(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "S3CACHEFS_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		out = append(out, kv)
	}
	out = append(out, e.srv.Env()...)
	out = append(out,
		"HOME="+e.home,
		"AWS_CONFIG_FILE="+filepath.Join(e.home, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(e.home, "no-aws-credentials"),
		"AWS_PAGER=",
		"S3CACHEFS_RUNTIME_DIR="+e.runtimeDir,
		// The race detector sleeps a second at exit by default: every
		// command of the race-built binary would take that much longer.
		"GORACE=atexit_sleep_ms=0",
	)
	// Later entries win in exec.Cmd, so extra overrides the above.
	out = append(out, e.extraEnv...)
	return append(out, extra...)
}

// uploadDataset uploads the generated dataset the way the user does:
// one `aws s3 sync` per split into s3://bucket/cache/tusz/SPLIT/.
func (e *env) uploadDataset(t *testing.T) {
	t.Helper()
	for _, split := range []string{"train", "dev"} {
		e.awsCLI(t, "s3", "sync", "--no-progress", filepath.Join(suite.dataset, split),
			fmt.Sprintf("s3://%s/%s/%s/", bucket, prefix, split))
	}
}

// awsCLI runs the AWS CLI against the server (not the proxy).
func (e *env) awsCLI(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, awsCLI, append([]string{"--endpoint-url", e.srv.Endpoint}, args...)...)
	cmd.Env = e.childEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// result is what a finished command printed and its exit status.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// run runs s3cachefs with args and the test environment.
func (e *env) run(t *testing.T, args ...string) result {
	t.Helper()
	return e.runWith(t, nil, args...)
}

// runWith runs s3cachefs with extra environment variables.
func (e *env) runWith(t *testing.T, extraEnv []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite.bin, args...)
	cmd.Env = e.childEnv(extraEnv...)
	cmd.Dir = "/" // never inside a mount, so no command keeps one busy
	return runCmd(t, ctx, cmd, "s3cachefs "+strings.Join(args, " "))
}

// runCmd runs cmd, made with exec.CommandContext(ctx, ...), and returns
// what it printed and its exit status. A command that cannot start or
// outlives ctx fails the test; so does a data race it reports.
func runCmd(t *testing.T, ctx context.Context, cmd *exec.Cmd, what string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && ctx.Err() == nil:
		r.code = exitErr.ExitCode()
	default:
		t.Fatalf("%s: %v\n%s", what, err, r)
	}
	if strings.Contains(r.stderr, "WARNING: DATA RACE") {
		t.Errorf("data race in %s:\n%s", what, r.stderr)
	}
	return r
}

// wantRefused checks that r is a refusal: exit status code, nothing on
// stdout, and one line on stderr that starts with "s3cachefs: " and says
// each of want (in any case).
func wantRefused(t *testing.T, r result, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit status %d, want %d\n%s", r.code, code, r)
	}
	msg, ok := strings.CutSuffix(r.stderr, "\n")
	if !ok || !strings.HasPrefix(msg, "s3cachefs: ") || strings.Contains(msg, "\n") || r.stdout != "" {
		t.Errorf("want exactly one \"s3cachefs: \" line on stderr and nothing on stdout:\n%s", r)
	}
	for _, w := range want {
		if !strings.Contains(strings.ToLower(msg), strings.ToLower(w)) {
			t.Errorf("message %q does not say %q", msg, w)
		}
	}
}

// runRefused runs s3cachefs args with extra environment variables and
// checks, with wantRefused, that it refuses them, and that it left the
// mounts under dir or at point, the daemons and the runtime dir as they
// were. (Only mounts where the command could mount count: other packages'
// tests may mount and unmount meanwhile.)
func (e *env) runRefused(t *testing.T, extraEnv, args []string, dir, point string, code int, want ...string) {
	t.Helper()
	mountsBefore, daemonsBefore, runtimeBefore := mountsWhere(t, dir, point), daemonPIDs(), e.runtimeEntries(t)
	wantRefused(t, e.runWith(t, extraEnv, args...), code, want...)
	if after := mountsWhere(t, dir, point); !slices.Equal(after, mountsBefore) {
		t.Errorf("the mount table changed:\nbefore %v\nafter  %v", mountsBefore, after)
	}
	if after := daemonPIDs(); !slices.Equal(after, daemonsBefore) {
		t.Errorf("s3cachefs processes changed from %v to %v", daemonsBefore, after)
	}
	if after := e.runtimeEntries(t); !slices.Equal(after, runtimeBefore) {
		t.Errorf("the runtime dir changed from %v to %v", runtimeBefore, after)
	}
}

// emptyDir makes an empty folder name in parent.
func emptyDir(t *testing.T, parent, name string) string {
	t.Helper()
	p := filepath.Join(parent, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// regularFile makes a small file name in parent.
func regularFile(t *testing.T, parent, name string) string {
	t.Helper()
	p := filepath.Join(parent, name)
	if err := os.WriteFile(p, []byte("not a folder\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// mounted is one mounted s3cachefs.
type mounted struct {
	dir   string // the mountpoint
	cache string // the cache dir
	pid   int    // the daemon
}

// mount mounts SOURCE on a fresh mountpoint with a fresh cache dir.
func (e *env) mount(t *testing.T, extra ...string) *mounted {
	t.Helper()
	return e.mountAt(t, newMountpoint(t), t.TempDir(), extra...)
}

// mountAt mounts SOURCE at dir with cache dir cache, through the proxy,
// and arranges for it to be dropped (or detached) when t ends.
func (e *env) mountAt(t *testing.T, dir, cache string, extra ...string) *mounted {
	t.Helper()
	args := append([]string{"mount", source, dir, "--cache-dir", cache,
		"--endpoint-url", e.proxy.Endpoint, "--force-path-style"}, extra...)
	r := e.run(t, args...)
	if r.code != 0 {
		t.Fatalf("mount failed: %s\ndaemon log:\n%s", r, logTail(cache))
	}
	m := &mounted{dir: dir, cache: cache}
	t.Cleanup(func() { e.cleanup(t, m) })
	if !isMounted(t, dir) {
		t.Fatalf("mount returned 0 but %s is not in the mount table", dir)
	}
	m.pid = e.status(t, m).PID
	return m
}

// newMountpoint returns an empty folder to mount on.
func newMountpoint(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// cleanup drops m if a test left it mounted, waits for its daemon to exit,
// and checks the daemon's log for data races.
func (e *env) cleanup(t *testing.T, m *mounted) {
	t.Helper()
	cleanupMount(t, m, func(args ...string) result { return e.run(t, args...) })
}

// cleanupMount is cleanup with the s3cachefs runner of the mount's user.
func cleanupMount(t *testing.T, m *mounted, run func(args ...string) result) {
	t.Helper()
	if isMounted(t, m.dir) {
		if r := run("drop", "--force", m.dir); r.code != 0 {
			t.Errorf("cleanup: drop --force %s: %s", m.dir, r)
		}
		if isMounted(t, m.dir) {
			t.Errorf("cleanup: %s still mounted after drop --force; detaching it", m.dir)
			_ = exec.Command("umount", "-l", m.dir).Run()
		}
	}
	if m.pid > 0 {
		if err := waitExit(m.pid, exitTimeout); err != nil {
			t.Errorf("cleanup: daemon of %s: %v", m.dir, err)
		}
	}
	if log := readLog(m.cache); strings.Contains(log, "WARNING: DATA RACE") {
		t.Errorf("data race in the daemon of %s:\n%s", m.dir, log)
	} else if t.Failed() {
		t.Logf("daemon log of %s:\n%s", m.dir, logTail(m.cache))
	}
}

func readLog(cacheDir string) string {
	b, _ := os.ReadFile(filepath.Join(cacheDir, "s3cachefs.log"))
	return string(b)
}

// logTail returns the end of the daemon log in cacheDir, for failures.
func logTail(cacheDir string) string {
	log := readLog(cacheDir)
	const max = 8 << 10
	if len(log) > max {
		log = "..." + log[len(log)-max:]
	}
	return log
}

// drop runs `s3cachefs drop [flags] MOUNTPOINT` and requires success.
func (e *env) drop(t *testing.T, m *mounted, flags ...string) {
	t.Helper()
	if r := e.run(t, append(append([]string{"drop"}, flags...), m.dir)...); r.code != 0 {
		t.Fatalf("drop %v %s: %s", flags, m.dir, r)
	}
	if isMounted(t, m.dir) {
		t.Fatalf("drop returned 0 but %s is still mounted", m.dir)
	}
	if err := waitExit(m.pid, exitTimeout); err != nil {
		t.Fatalf("after drop: %v", err)
	}
}

// status asks m's daemon for its status.
func (e *env) status(t *testing.T, m *mounted) api.Status {
	t.Helper()
	return parseStatus(t, e.run(t, "status", "--mount", m.dir, "--json"))
}

// parseStatus decodes what `status --json` printed; r must have succeeded.
func parseStatus(t *testing.T, r result) api.Status {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("status --json: %s", r)
	}
	var s api.Status
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("status --json printed something that is not JSON: %v\n%s", err, r.stdout)
	}
	return s
}

// startJob starts a detached prefetch of paths on m and returns the job
// as `prefetch --detach --json` printed it.
func (e *env) startJob(t *testing.T, m *mounted, paths ...string) api.Job {
	t.Helper()
	r := e.run(t, append([]string{"prefetch", "--mount", m.dir, "--detach", "--json"}, paths...)...)
	var job api.Job
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &job) != nil || job.ID == "" {
		t.Fatalf("prefetch --detach --json %v: %s", paths, r)
	}
	return job
}

// jobState returns the state status shows for the job id of m, or "" if
// status does not list it.
func (e *env) jobState(t *testing.T, m *mounted, id string) string {
	t.Helper()
	for _, p := range e.status(t, m).Prefetch {
		if p.ID == id {
			return p.State
		}
	}
	return ""
}

// waitNoOpenFiles waits until m's daemon has no open files.
func (e *env) waitNoOpenFiles(t *testing.T, m *mounted) {
	t.Helper()
	waitNoOpenFiles(t, m.dir, func() api.Status { return e.status(t, m) })
}

// waitNoOpenFiles waits until status, the status of the daemon of the
// mount at mp, shows no open files. The kernel sends FUSE RELEASE
// asynchronously after close(2), so a plain drop right after reading could
// otherwise see a file still open.
func waitNoOpenFiles(t *testing.T, mp string, status func() api.Status) {
	t.Helper()
	waitFor(t, 10*time.Second, "no open files on "+mp, func() bool {
		return status().OpenFiles == 0
	})
}

// waitFor polls cond until it holds, for conditions that have no event to
// wait on (another process's view of the kernel's state).
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
		<-tick.C
	}
}

// wantNoRequests fails if the proxy saw any S3 request since its last reset.
func (e *env) wantNoRequests(t *testing.T, what string) {
	t.Helper()
	if c := e.proxy.Counts(); c != (s3server.Counts{}) {
		t.Errorf("%s made S3 requests: %+v, want none", what, c)
	}
}

// runtimeEntries lists the runtime dir (sockets and state files).
func (e *env) runtimeEntries(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(e.runtimeDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, d := range ents {
		names = append(names, d.Name())
	}
	return names
}

// jsonUnmarshal decodes s into v.
func jsonUnmarshal(s string, v any) error {
	return json.Unmarshal([]byte(s), v)
}
