package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// hostileMount is a mount on the fake S3 with two small files, for the
// tests that need a daemon to talk to.
func hostileMount(t *testing.T, extra ...string) (*env, *mounted, map[string][]byte) {
	t.Helper()
	e, fake := oddEnv(t)
	files := map[string][]byte{"train/a.npz": []byte("train bytes"), "dev/b.npz": []byte("dev bytes")}
	for name, data := range files {
		fake.Put(bucket, prefix+"/"+name, data)
	}
	return e, e.mount(t, extra...), files
}

// TestHostileFlags gives every command missing, malformed or contradictory
// flags (those TestBadInput does not cover): each must print exactly one
// "s3cachefs: ..." line naming the problem, exit 2 for a mistake in the
// command line and 1 for what only the daemon or the machine can tell, and
// leave the mount table, the daemons and the runtime dir as they were.
func TestHostileFlags(t *testing.T) {
	e, m, files := hostileMount(t)
	tmp := t.TempDir()
	mnt := emptyDir(t, tmp, "mnt")
	notMount := emptyDir(t, tmp, "plain")
	cache := filepath.Join(tmp, "cache")
	mount := func(extra ...string) []string {
		return append([]string{"mount", source, mnt, "--cache-dir", cache, "--endpoint-url", e.proxy.Endpoint, "--force-path-style"}, extra...)
	}
	cases := []struct {
		args []string
		code int    // the exact exit status
		want string // a substring of the message, any case
	}{
		{[]string{"nosuchcommand"}, 2, "unknown command"},
		{[]string{"mount"}, 2, "SOURCE and MOUNTPOINT"},
		{[]string{"mount", source}, 2, "SOURCE and MOUNTPOINT"},
		{[]string{"mount", source, mnt, "extra", "--cache-dir", cache}, 2, "SOURCE and MOUNTPOINT"},
		{[]string{"mount", source, mnt}, 2, "--cache-dir"},
		{[]string{"mount", source, mnt, "--cache-dir"}, 2, "cache-dir"},
		{mount("--no-such-flag"), 2, "no-such-flag"},
		{[]string{"mount", "s3://Bad_Bucket/x", mnt, "--cache-dir", cache}, 2, "bucket"},
		{[]string{"mount", "s3://bucket/a/../b", mnt, "--cache-dir", cache}, 2, ".."},
		{mount("--max-cache-size", "lots"), 2, "--max-cache-size"},
		{mount("--max-cache-size", "-1G"), 2, "--max-cache-size"},
		{mount("--min-free", "100%"), 2, "--min-free"},
		{mount("--min-free", "plenty"), 2, "--min-free"},
		{mount("--metadata-ttl", "forever"), 2, "--metadata-ttl"},
		{mount("--metadata-ttl", "-1s"), 2, "--metadata-ttl"},
		{mount("--uid", "-1"), 2, "--uid"},
		{mount("--gid", "abc"), 2, "gid"},
		{mount("--file-mode", "999"), 2, "--file-mode"},
		{mount("--dir-mode", "rwx"), 2, "--dir-mode"},
		{mount("--log-level", "loud"), 2, "--log-level"},
		{mount("--endpoint-url", "ftp://example.com"), 2, "--endpoint-url"},
		{mount("--endpoint-url", "http://"), 2, "--endpoint-url"},
		{mount("--metrics-addr", "nope"), 2, "--metrics-addr"},
		{mount("--metrics-addr", "127.0.0.1:99999"), 2, "--metrics-addr"},
		{mount("--prefetch-objects", "0"), 2, "--prefetch-objects"},
		{mount("--max-fetches", "99999"), 2, "--max-fetches"},
		{mount("--kernel-read-ahead", "1TiB"), 2, "--kernel-read-ahead"},
		{mount("--foreground=maybe"), 2, "foreground"},
		{mount("--prefetch", "/etc"), 2, "not under the mount"},

		{[]string{"prefetch", "--mount", m.dir}, 2, "PATH"},
		{[]string{"prefetch", "--mount", m.dir, "--interval", "0", "train"}, 2, "--interval"},
		{[]string{"prefetch", "--mount", m.dir, "--interval", "soon", "train"}, 2, "interval"},
		{[]string{"prefetch", "--mount", m.dir, "--cancel", "20250101T000000.000-1", "train"}, 2, "--cancel"},
		{[]string{"prefetch", "--mount", m.dir, "--cancel", "20250101T000000.000-999"}, 1, "job"},
		{[]string{"prefetch", "--mount", m.dir, "--cancel", "../../status"}, 2, "job id"},
		{[]string{"prefetch", "--mount", m.dir, "--cancel", "20250101T000000.000-1", "--unpin"}, 2, "cannot be combined"},
		{[]string{"prefetch", "--mount", m.dir, "--cancel", "20250101T000000.000-1", "--detach"}, 2, "cannot be combined"},
		{[]string{"prefetch", "--mount", m.dir, "--cancel", "20250101T000000.000-1", "--json"}, 2, "cannot be combined"},
		{[]string{"prefetch", "--mount", m.dir, "--unpin", "--detach", "train"}, 2, "cannot be combined"},
		{[]string{"prefetch", "--mount", m.dir, "--unpin", "--interval", "2s", "train"}, 2, "cannot be combined"},
		{[]string{"prefetch", "--mount", m.dir, "/etc"}, 2, "not under the mount"},
		{[]string{"prefetch", "--mount", m.dir, "no-such-folder"}, 1, "does not exist"},
		{[]string{"prefetch", "--mount", notMount, "train"}, 1, "no s3cachefs daemon"},
		{[]string{"prefetch", "--mount"}, 2, "mount"},

		{[]string{}, 2, "missing command"},
		{[]string{""}, 2, "missing command"},
		{[]string{"mnt"}, 2, "unknown command"},

		{[]string{"status", "--mount", m.dir, "extra"}, 2, "no arguments"},
		{[]string{"status", "--mount", m.dir, "--json=2"}, 2, "json"},
		{[]string{"status", "--mount", notMount}, 1, "no s3cachefs daemon"},
		{[]string{"status", "--mount"}, 2, "mount"},

		{[]string{"verify", "--mount", m.dir, "/etc"}, 2, "not under the mount"},
		{[]string{"verify", "--mount", m.dir, "no-such-folder"}, 1, "no-such-folder"},
		{[]string{"verify", "--mount", m.dir, "--deep=perhaps"}, 2, "deep"},
		{[]string{"verify", "--mount", notMount}, 1, "no s3cachefs daemon"},

		{[]string{"evict", "--mount", m.dir}, 2, "PATH"},
		{[]string{"evict", "--mount", m.dir, "/etc"}, 2, "not under the mount"},
		{[]string{"evict", "--mount", notMount, "train"}, 1, "no s3cachefs daemon"},

		{[]string{"drop"}, 2, "MOUNTPOINT"},
		{[]string{"drop", m.dir, notMount}, 2, "MOUNTPOINT"},
		{[]string{"drop", notMount}, 1, "not an s3cachefs mount"},
		{[]string{"drop", filepath.Join(tmp, "missing")}, 1, "not an s3cachefs mount"},
		{[]string{"drop", "--purge=x", m.dir}, 2, "purge"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			e.runRefused(t, nil, c.args, tmp, m.dir, c.code, c.want)
		})
	}
	if _, err := os.Stat(cache); err == nil {
		t.Errorf("a refused mount left its cache dir %s behind", cache)
	}
	readAll(t, m.dir, files)
}

// hostileSocketClient talks HTTP to the only control socket of e.
func hostileSocketClient(t *testing.T, e *env) (*http.Client, string) {
	t.Helper()
	socks, _ := filepath.Glob(filepath.Join(e.runtimeDir, "*.sock"))
	if len(socks) != 1 {
		t.Fatalf("want one control socket in %s, got %v", e.runtimeDir, socks)
	}
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socks[0])
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial}, Timeout: 30 * time.Second}, socks[0]
}

// TestHostileControlSocket sends the daemon's control socket requests no
// s3cachefs command would: each is refused with a 4xx, and the daemon
// serves on unharmed.
func TestHostileControlSocket(t *testing.T) {
	e, m, files := hostileMount(t)
	client, sock := hostileSocketClient(t, e)
	huge := `{"paths":["` + strings.Repeat("x", 2<<20) + `"]}`
	cases := []struct {
		method, path, body string
	}{
		{"DELETE", "/status", ""},
		{"PATCH", "/shutdown", ""},
		{"GET", "/prefetch", ""},
		{"GET", "/no/such/path", ""},
		{"POST", "/prefetch", "{not json"},
		{"POST", "/prefetch", `{"paths":[1,2]}`},
		{"POST", "/prefetch", `{"paths":["train"],"evil":true}`},
		{"POST", "/prefetch", `{"paths":["train"]}{"paths":["dev"]}`},
		{"POST", "/prefetch", `{"paths":["../../../etc"]}`},
		{"POST", "/verify", `{"paths":["/etc/passwd"]}`},
		{"POST", "/evict", `{"paths":[]}`},
		{"POST", "/prefetch", huge},
		{"GET", "/jobs/20250101T000000.000-12345", ""},
		{"POST", "/jobs/20250101T000000.000-12345/cancel", ""},
		{"GET", "/jobs/" + strings.Repeat("7", 1000), ""},
		{"POST", "/jobs/%2e%2e/cancel", ""},
	}
	for _, c := range cases {
		req, err := http.NewRequest(c.method, "http://s3cachefs"+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("%s %s: %v", c.method, c.path, err)
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode > 499 {
			t.Errorf("%s %s %.60q: status %d, want 4xx: %s", c.method, c.path, c.body, resp.StatusCode, body)
		}
	}
	// Not HTTP at all.
	for _, raw := range []string{"GARBAGE\r\n\r\n", "GET /status HTTP/9.9\r\n\r\n", "\x00\x01\x02\xff\r\n\r\n"} {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(conn, raw)
		line, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		// net/http refuses with 400, or 505 for an HTTP version it
		// does not speak, and closes the connection.
		if !strings.HasPrefix(line, "HTTP/1.1 4") && !strings.HasPrefix(line, "HTTP/1.1 505 ") {
			t.Errorf("raw %q: answer %q, want a 4xx (or 505)", raw, line)
		}
	}
	// The daemon lives on, answers, and serves the tree.
	if s := e.status(t, m); s.PID != m.pid || !alive(m.pid) {
		t.Errorf("daemon pid %d after the requests (alive %v), want %d", s.PID, alive(m.pid), m.pid)
	}
	readAll(t, m.dir, files)
	if r := e.run(t, "prefetch", "--mount", m.dir, "train"); r.code != 0 {
		t.Errorf("a good prefetch after the bad requests failed: %s", r)
	}
}

// --allow-other is off unless asked for.
func TestHostileAllowOther(t *testing.T) {
	e, m, _ := hostileMount(t)
	if opts := mountOptions(t, m.dir); slices.Contains(opts, "allow_other") {
		t.Errorf("a default mount has allow_other: %v", opts)
	}
	other := e.mount(t, "--allow-other")
	if opts := mountOptions(t, other.dir); !slices.Contains(opts, "allow_other") {
		t.Errorf("a mount with --allow-other lacks allow_other: %v", opts)
	}
}

// TestHostileCredentialsHidden runs a daemon at --log-level debug with a
// distinctive secret key and session token, exercises every command, and
// looks for either in everything s3cachefs writes or shows: command
// output and errors, status (text and JSON), the daemon's log and its
// /proc/PID/cmdline. A mount refused for bad credentials must not echo
// them either.
func TestHostileCredentialsHidden(t *testing.T) {
	secret := "oddwipSecret" + strings.Repeat("Q7", 12)
	token := "oddwipToken" + strings.Repeat("Z3", 12)
	creds := []string{"AWS_SECRET_ACCESS_KEY=" + secret, "AWS_SESSION_TOKEN=" + token}
	e, fake := oddEnv(t)
	fake.Put(bucket, prefix+"/train/a.npz", []byte("train bytes"))

	var seen strings.Builder // everything shown to the user
	run := func(args ...string) result {
		r := e.runWith(t, creds, args...)
		fmt.Fprintf(&seen, "$ %s\n%s%s", strings.Join(args, " "), r.stdout, r.stderr)
		return r
	}
	dir, cache := newMountpoint(t), t.TempDir()
	if r := run(append(mountArgs(e, source, dir, cache), "--log-level", "debug")...); r.code != 0 {
		t.Fatalf("mount: %s\n%s", r, logTail(cache))
	}
	m := &mounted{dir: dir, cache: cache}
	t.Cleanup(func() { e.cleanup(t, m) })
	m.pid = e.status(t, m).PID
	readAll(t, m.dir, map[string][]byte{"train/a.npz": []byte("train bytes")})
	for _, args := range [][]string{
		{"status", "--mount", m.dir},
		{"status", "--mount", m.dir, "--json"},
		{"prefetch", "--mount", m.dir, "--json", "train"},
		{"prefetch", "--mount", m.dir, "no-such-folder"},
		{"verify", "--mount", m.dir, "--deep"},
		{"verify", "--mount", m.dir, "--json", "no-such-folder"},
		{"evict", "--mount", m.dir, "train"},
		{"mount", source, m.dir, "--cache-dir", t.TempDir()}, // refused: already mounted
	} {
		run(args...)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", m.pid))
	if err != nil {
		t.Fatal(err)
	}
	e.waitNoOpenFiles(t, m)
	if r := run("drop", m.dir); r.code != 0 {
		t.Fatalf("drop: %s", r)
	}
	if err := waitExit(m.pid, exitTimeout); err != nil {
		t.Fatal(err)
	}
	log := readLog(cache)
	if !strings.Contains(log, "level=DEBUG") {
		t.Fatalf("the daemon log has no debug lines; the check below would prove little:\n%s", log)
	}

	// Bad credentials against a server that checks them.
	real := newEnv(t)
	badCache := filepath.Join(t.TempDir(), "cache")
	r := real.runWith(t, creds, append(mountArgs(real, source, newMountpoint(t), badCache), "--log-level", "debug")...)
	if r.code != 1 {
		t.Fatalf("a mount with a wrong secret key: %s\nwant exit 1", r)
	}
	fmt.Fprintf(&seen, "$ mount with a wrong secret\n%s%s", r.stdout, r.stderr)

	for what, text := range map[string]string{
		"command output": seen.String(), "daemon log": log, "daemon cmdline": string(cmdline),
		"log of the refused mount": readLog(badCache),
	} {
		for _, s := range []string{secret, token} {
			if strings.Contains(text, s) {
				t.Errorf("the %s holds a credential (%.12s...):\n%s", what, s, text)
			}
		}
	}
}
