package test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"s3cachefs/cmd/s3cachefs/api"
)

// TestNonRoot runs s3cachefs as a real unprivileged user (nobody): it
// mounts through fusermount3, reads, prefetches, verifies, evicts, shows
// status and drops, with its control socket in its own runtime dir; a
// plain `fusermount3 -u` stops the daemon; drop --force detaches a busy
// mount and a remount clears a killed daemon's, both without root; a
// runtime dir someone else made is refused; and --allow-other without
// user_allow_other in /etc/fuse.conf is refused before anything is made.
func TestNonRoot(t *testing.T) {
	u := newUser(t)
	openDevFuse(t)
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	reachable(t, suite.dataset)
	cache := filepath.Join(u.dir(t), "cache") // made by mount, as the user

	t.Run("XDG_RUNTIME_DIR", func(t *testing.T) {
		xdg := u.runtimeDir(t)
		env := u.env(e, "XDG_RUNTIME_DIR="+xdg)
		rootMount := e.mount(t) // another user's mount beside the user's own
		m := u.mount(t, e, env, u.dir(t), cache)
		runtime := filepath.Join(xdg, "s3cachefs")
		// Without --mount, the user's commands pick the user's mount.
		if r := u.run(t, env, "status", "--json"); r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("%q", m.dir)) {
			t.Errorf("status without --mount as %s, beside root's mount %s: %s; want the status of %s", u.name, rootMount.dir, r, m.dir)
		}
		wantPrivateSocket(t, u, runtime)
		wantDaemonUID(t, m.pid, u.uid)
		if opts := mountOptions(t, m.dir); !slices.Contains(opts, "user_id="+strconv.Itoa(int(u.uid))) {
			t.Errorf("mount options of %s: %v, want user_id=%d", m.dir, opts, u.uid)
		}

		if r := u.run(t, env, "prefetch", "--mount", m.dir, "train"); r.code != 0 {
			t.Fatalf("prefetch train as %s: %s", u.name, r)
		}
		s := u.status(t, env, m.dir)
		if train := len(npzNames(files, "train")); s.CompleteObjects < train {
			t.Errorf("after prefetch train: %d complete objects, want >= %d", s.CompleteObjects, train)
		}
		u.compare(t, env, m.dir, files) // train from SSD, the rest from S3
		u.compare(t, env, m.dir, files) // again: everything cached

		s = u.status(t, env, m.dir)
		if s.ReadMode != "daemon" || !strings.Contains(s.PassthroughOff, "root") || s.PassthroughOpens != 0 {
			t.Errorf("status as %s: read_mode %q, passthrough_off %q, %d passthrough opens; want daemon, a reason naming root, 0",
				u.name, s.ReadMode, s.PassthroughOff, s.PassthroughOpens)
		}
		if s.BytesFromS3 < totalBytes(files) {
			t.Errorf("bytes_from_s3 %d after reading %d bytes once", s.BytesFromS3, totalBytes(files))
		}
		r := u.run(t, env, "status", "--mount", m.dir)
		if want := "daemon (" + s.PassthroughOff + ")"; r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("status as %s: want a read mode line with %q: %s", u.name, want, r)
		}
		if r := u.run(t, env, "verify", "--mount", m.dir, "--complete"); r.code != 0 {
			t.Errorf("verify --complete as %s: %s", u.name, r)
		}
		if r := u.run(t, env, "evict", "--mount", m.dir, "dev"); r.code != 0 {
			t.Errorf("evict dev as %s: %s", u.name, r)
		}
		if after := u.status(t, env, m.dir); after.Objects >= s.Objects {
			t.Errorf("evict dev left %d of %d objects cached", after.Objects, s.Objects)
		}

		// Root's commands look in root's runtime dir: they must say whose
		// mount it is, not take its daemon for dead and detach it.
		for _, cmd := range [][]string{{"status", "--mount", m.dir}, {"drop", m.dir}} {
			r := e.run(t, cmd...)
			want := fmt.Sprintf("s3cachefs: %s is a mount of uid %d, whose daemon is found through that user's runtime dir: run the command as uid %d\n",
				m.dir, u.uid, u.uid)
			if r.code != 1 || r.stderr != want {
				t.Errorf("%s as root on %s's mount: %s\nwant exit 1 and %q", cmd[0], u.name, r, want)
			}
		}
		if !isMounted(t, m.dir) || !alive(m.pid) {
			t.Fatalf("root's drop of %s's mount detached it", u.name)
		}

		u.waitNoOpenFiles(t, env, m.dir)
		if r := u.run(t, env, "drop", m.dir); r.code != 0 || r.stdout != "unmounted "+m.dir+"\n" {
			t.Fatalf("drop as %s: %s", u.name, r)
		}
		m.wantStopped(t)
		if names := dirNames(t, runtime); len(names) != 0 {
			t.Errorf("%s after drop: %v, want empty", runtime, names)
		}
	})

	t.Run("fusermount3 -u", func(t *testing.T) {
		// No XDG_RUNTIME_DIR: the socket goes to /tmp/s3cachefs-UID.
		env := u.env(e)
		runtime := fmt.Sprintf("/tmp/s3cachefs-%d", u.uid)
		if _, err := os.Lstat(runtime); errors.Is(err, fs.ErrNotExist) {
			t.Cleanup(func() { os.Remove(runtime) })
		}
		e.proxy.Reset()
		m := u.mount(t, e, env, u.dir(t), cache) // the cache the first mount filled
		wantPrivateSocket(t, u, runtime)
		u.compare(t, env, m.dir, npzOnly(files, "train"))
		if c := e.proxy.Counts(); c.GetObject != 0 {
			t.Errorf("reading train from a cache that holds it made %d GETs, want 0", c.GetObject)
		}
		u.waitNoOpenFiles(t, env, m.dir)
		if r := u.exec(t, env, nil, "fusermount3", "-u", m.dir); r.code != 0 {
			t.Fatalf("fusermount3 -u as %s: %s", u.name, r)
		}
		m.wantStopped(t)
		if names := dirNames(t, runtime); len(names) != 0 {
			t.Errorf("%s after fusermount3 -u: %v, want empty", runtime, names)
		}
	})

	t.Run("squatted /tmp/s3cachefs-UID", func(t *testing.T) {
		// Anyone can make a folder in /tmp: one that is not the user's
		// own is refused, never used.
		runtime := fmt.Sprintf("/tmp/s3cachefs-%d", u.uid)
		if err := os.Mkdir(runtime, 0o755); err != nil {
			t.Skipf("cannot make %s as another user: %v", runtime, err)
		}
		t.Cleanup(func() { os.Remove(runtime) })
		mnt := u.dir(t)
		r := u.run(t, u.env(e), "mount", source, mnt, "--cache-dir", cache, "--endpoint-url", e.proxy.Endpoint, "--force-path-style")
		want := fmt.Sprintf("s3cachefs: runtime dir is not private: %s must be a folder of uid %d with mode 0700, not drwxr-xr-x owned by uid 0; remove it\n",
			runtime, u.uid)
		if r.code != 1 || r.stderr != want {
			t.Errorf("mount as %s with %s owned by root: %s\nwant exit 1 and %q", u.name, runtime, r, want)
		}
		if isMounted(t, mnt) {
			t.Errorf("%s is mounted after a refused mount", mnt)
		}
		if names := dirNames(t, runtime); len(names) != 0 {
			t.Errorf("a refused mount left %v in %s", names, runtime)
		}
	})

	t.Run("drop --force", func(t *testing.T) {
		env := u.env(e, "XDG_RUNTIME_DIR="+u.runtimeDir(t))
		m := u.mount(t, e, env, u.dir(t), cache)
		// A process of the user's working inside the mount keeps it busy.
		ctx, cancel := context.WithCancel(context.Background())
		busy := u.command(ctx, env, "sleep", "600")
		busy.Dir = m.dir
		if err := busy.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cancel()
			busy.Wait()
		})
		if r := u.run(t, env, "drop", m.dir); r.code != 1 || !strings.Contains(r.stderr, "is busy") {
			t.Errorf("drop of a busy mount as %s: %s; want exit 1 saying it is busy", u.name, r)
		}
		if r := u.run(t, env, "drop", "--force", m.dir); r.code != 0 {
			t.Fatalf("drop --force of a busy mount as %s: %s", u.name, r)
		}
		m.wantStopped(t)
	})

	t.Run("remount after kill -9", func(t *testing.T) {
		env := u.env(e, "XDG_RUNTIME_DIR="+u.runtimeDir(t))
		mnt := u.dir(t)
		dead := u.mount(t, e, env, mnt, cache)
		if err := syscall.Kill(dead.pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := waitExit(dead.pid, exitTimeout); err != nil {
			t.Fatal(err)
		}
		// The dead daemon's mount is still there; the user's next mount
		// removes it (through fusermount3) and mounts afresh.
		r := u.run(t, env, "mount", source, mnt, "--cache-dir", cache, "--endpoint-url", e.proxy.Endpoint, "--force-path-style")
		if r.code != 0 {
			t.Fatalf("remount as %s after kill -9: %s", u.name, r)
		}
		m := u.track(t, env, mnt, cache)
		if want := fmt.Sprintf("s3cachefs: the daemon of %s (pid %d) had died; removed its mount\n", mnt, dead.pid); r.stderr != want {
			t.Errorf("remount after kill -9 said %q on stderr, want %q", r.stderr, want)
		}
		if n := len(mountsAt(t, mnt)); n != 1 {
			t.Errorf("%d mounts at %s after the remount, want 1", n, mnt)
		}
		u.compare(t, env, m.dir, npzOnly(files, "dev"))
	})

	t.Run("--allow-other", func(t *testing.T) {
		if fuseConfAllowsOther(t) {
			t.Skip("/etc/fuse.conf has user_allow_other: there is nothing to refuse")
		}
		xdg := u.runtimeDir(t)
		mnt, fresh := u.dir(t), filepath.Join(u.dir(t), "cache")
		r := u.run(t, u.env(e, "XDG_RUNTIME_DIR="+xdg), "mount", source, mnt, "--cache-dir", fresh,
			"--endpoint-url", e.proxy.Endpoint, "--force-path-style", "--allow-other")
		want := "s3cachefs: --allow-other needs a line user_allow_other in /etc/fuse.conf when not run as root " +
			"(add it, or mount without --allow-other)\n"
		if r.code != 1 || r.stderr != want || r.stdout != "" {
			t.Errorf("mount --allow-other as %s: %s\nwant exit 1 and stderr %q", u.name, r, want)
		}
		if isMounted(t, mnt) {
			t.Errorf("%s is mounted after a refused mount", mnt)
		}
		for _, p := range []string{fresh, filepath.Join(xdg, "s3cachefs")} {
			if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a refused mount made %s (%v)", p, err)
			}
		}
	})
}

// testUser is the unprivileged account the tests run s3cachefs as.
type testUser struct {
	name     string
	uid, gid uint32
	home     string // owned by the user; HOME and TMPDIR of its commands
}

// newUser returns the machine's "nobody" account with a home of its own
// for this test. It fails where there is no such account.
func newUser(t *testing.T) *testUser {
	t.Helper()
	acct, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("an unprivileged account is needed: %v", err)
	}
	uid, err1 := strconv.ParseUint(acct.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(acct.Gid, 10, 32)
	if err1 != nil || err2 != nil || uid == 0 {
		t.Fatalf("account nobody has uid %q, gid %q", acct.Uid, acct.Gid)
	}
	u := &testUser{name: acct.Username, uid: uint32(uid), gid: uint32(gid)}
	u.home = u.dir(t)
	return u
}

// dir returns a fresh folder owned by u (mode 0700), reachable from /.
func (u *testUser) dir(t *testing.T) string {
	t.Helper()
	d := t.TempDir() // 0755
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, int(u.uid), int(u.gid)); err != nil {
		t.Fatal(err)
	}
	reachable(t, d)
	return d
}

// runtimeDir returns a fresh folder owned by u (mode 0700) to be its
// XDG_RUNTIME_DIR. It is short, as /run/user/UID is: a socket path inside
// a t.TempDir of a subtest may be longer than a unix socket allows.
func (u *testUser) runtimeDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "s3c-xdg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chown(d, int(u.uid), int(u.gid)); err != nil {
		t.Fatal(err)
	}
	return d
}

// reachable lets every user search (not list) each folder above path, as
// the folders of a real user's home are; t.TempDir makes them 0700. The
// modes are put back when t ends.
func reachable(t *testing.T, path string) {
	t.Helper()
	for p := filepath.Dir(path); p != "/"; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if mode := st.Mode().Perm(); mode&0o001 == 0 {
			if err := os.Chmod(p, mode|0o001); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(p, mode) })
		}
	}
}

// openDevFuse lets every user open /dev/fuse, as udev's rule (0666) does
// on a normal machine; this VM has no udev. The mode is put back when t
// ends.
func openDevFuse(t *testing.T) {
	t.Helper()
	const dev = "/dev/fuse"
	st, err := os.Stat(dev)
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Mode().Perm(); mode != 0o666 {
		if err := os.Chmod(dev, 0o666); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := os.Chmod(dev, mode); err != nil {
				t.Errorf("put back the mode of %s: %v", dev, err)
			}
		})
	}
}

// env is the environment of u's commands: the test's (credentials of the
// S3 server, no machine AWS config), with HOME in u's home and no
// S3CACHEFS_RUNTIME_DIR, so the daemon picks its runtime dir as it does
// for any user; extra (e.g. XDG_RUNTIME_DIR=...) is added.
func (u *testUser) env(e *env, extra ...string) []string {
	var out []string
	for _, kv := range e.childEnv() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "S3CACHEFS_RUNTIME_DIR", "XDG_RUNTIME_DIR", "HOME", "TMPDIR", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE":
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "HOME="+u.home, "TMPDIR="+u.home,
		"AWS_CONFIG_FILE="+filepath.Join(u.home, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(u.home, "no-aws-credentials"))
	return append(out, extra...)
}

// command returns cmd name args run as u, from /, with env.
func (u *testUser) command(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: []uint32{}}}
	return cmd
}

// exec runs name args as u, with extra files from fd 3 on, and returns
// what it printed and its exit status.
func (u *testUser) exec(t *testing.T, env []string, extraFiles []*os.File, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := u.command(ctx, env, name, args...)
	cmd.ExtraFiles = extraFiles
	return runCmd(t, ctx, cmd, name+" "+strings.Join(args, " ")+" as "+u.name)
}

// run runs s3cachefs args as u.
func (u *testUser) run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return u.exec(t, env, nil, suite.bin, args...)
}

// status runs `status --json --mount mp` as u.
func (u *testUser) status(t *testing.T, env []string, mp string) api.Status {
	t.Helper()
	return parseStatus(t, u.run(t, env, "status", "--mount", mp, "--json"))
}

// waitNoOpenFiles waits until the daemon of mp, which u runs, has no open
// files.
func (u *testUser) waitNoOpenFiles(t *testing.T, env []string, mp string) {
	t.Helper()
	waitNoOpenFiles(t, mp, func() api.Status { return u.status(t, env, mp) })
}

// compare reads every file of files through the mount at mp as u and
// compares it byte for byte (cmp) with the dataset's copy, which is what
// was uploaded to S3.
func (u *testUser) compare(t *testing.T, env []string, mp string, files map[string][]byte) {
	t.Helper()
	for _, name := range sortedNames(files) {
		if r := u.exec(t, env, nil, "cmp", filepath.Join(mp, name), filepath.Join(suite.dataset, name)); r.code != 0 {
			t.Errorf("read %s through the mount as %s: %s", name, u.name, r)
		}
	}
}

// userMount is a mount u made.
type userMount = mounted // pid: the daemon, running as the user

// mount mounts SOURCE at mnt with cache dir cache as u, through the
// proxy, and drops it (as u, else detaches it as root) when t ends.
func (u *testUser) mount(t *testing.T, e *env, env []string, mnt, cache string, extra ...string) *userMount {
	t.Helper()
	args := append([]string{"mount", source, mnt, "--cache-dir", cache,
		"--endpoint-url", e.proxy.Endpoint, "--force-path-style"}, extra...)
	if r := u.run(t, env, args...); r.code != 0 {
		t.Fatalf("mount as %s: %s\ndaemon log:\n%s", u.name, r, logTail(cache))
	}
	return u.track(t, env, mnt, cache)
}

// track arranges for the mount u made at mnt to be dropped when t ends,
// and finds its daemon.
func (u *testUser) track(t *testing.T, env []string, mnt, cache string) *userMount {
	t.Helper()
	m := &userMount{dir: mnt, cache: cache}
	t.Cleanup(func() { u.cleanup(t, env, m) })
	if !isMounted(t, mnt) {
		t.Fatalf("mount returned 0 but %s is not in the mount table", mnt)
	}
	m.pid = u.status(t, env, mnt).PID
	return m
}

// cleanup drops m as u if a test left it mounted, as env.cleanup does.
func (u *testUser) cleanup(t *testing.T, env []string, m *userMount) {
	t.Helper()
	cleanupMount(t, m, func(args ...string) result { return u.run(t, env, args...) })
}

// wantStopped checks that m is unmounted and its daemon has exited after
// closing everything (its last log line says "stopped").
func (m *userMount) wantStopped(t *testing.T) {
	t.Helper()
	if isMounted(t, m.dir) {
		t.Errorf("%s is still mounted", m.dir)
	}
	if err := waitExit(m.pid, exitTimeout); err != nil {
		t.Fatal(err)
	}
	if log := readLog(m.cache); !strings.Contains(lastLine(log), "msg=stopped") {
		t.Errorf("the daemon's log does not end with its stop:\n%s", logTail(m.cache))
	}
}

// wantPrivateSocket checks that dir is a folder of u's, mode 0700, holding
// one control socket (mode 0600, u's) and its state file.
func wantPrivateSocket(t *testing.T, u *testUser, dir string) {
	t.Helper()
	checkOwned(t, dir, u.uid, fs.ModeDir|0o700)
	socks, _ := filepath.Glob(filepath.Join(dir, "*.sock"))
	if names := dirNames(t, dir); len(socks) != 1 || len(names) != 2 {
		t.Fatalf("%s holds %v; want one socket and its state file", dir, names)
	}
	checkOwned(t, socks[0], u.uid, fs.ModeSocket|0o600)
	checkOwned(t, strings.TrimSuffix(socks[0], ".sock")+".json", u.uid, 0o600)
}

// checkOwned checks the owner, type and permission bits of path.
func checkOwned(t *testing.T, path string, uid uint32, mode fs.FileMode) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode() & (fs.ModeType | fs.ModePerm); got != mode || st.Sys().(*syscall.Stat_t).Uid != uid {
		t.Errorf("%s: mode %v, owner %d; want %v, %d", path, got, st.Sys().(*syscall.Stat_t).Uid, mode, uid)
	}
}

// wantDaemonUID checks that process pid runs as uid (real and effective).
func wantDaemonUID(t *testing.T, pid int, uid uint32) {
	t.Helper()
	f := strings.Fields(procStatus(t, pid, "Uid"))
	if want := strconv.Itoa(int(uid)); len(f) < 2 || f[0] != want || f[1] != want {
		t.Errorf("daemon pid %d runs as uid %v, want %s", pid, f, want)
	}
}

// fuseConfAllowsOther reports whether /etc/fuse.conf lets users mount with
// allow_other, read as fusermount3 reads it.
func fuseConfAllowsOther(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile("/etc/fuse.conf")
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		line, _, _ = strings.Cut(line, "#")
		if strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range ents {
		names = append(names, d.Name())
	}
	return names
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

func totalBytes(files map[string][]byte) int64 {
	var n int64
	for _, b := range files {
		n += int64(len(b))
	}
	return n
}

// npzOnly returns the .npz files of split.
func npzOnly(files map[string][]byte, split string) map[string][]byte {
	out := map[string][]byte{}
	for _, n := range npzNames(files, split) {
		out[n] = files[n]
	}
	return out
}
