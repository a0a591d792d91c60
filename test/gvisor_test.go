package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"s3cachefs/cmd/s3cachefs/api"
	"s3cachefs/test/s3server"
)

// runscBuild is one gVisor build the sandbox test runs under.
type runscBuild struct {
	name string
	bin  string
	args []string // before "do"
	// badSeek is set for a build whose lseek(SEEK_END) on FUSE files
	// misses the size (its bug, not ours; numpy.load, which finds an
	// NPZ's directory that way, then fails).
	badSeek bool
}

// runscBuilds are the gVisor builds `make deps` installs: Debian 12's
// package (2022-12; --fuse turns its FUSE on) and a current build from
// gVisor's Go module ($RUNSC, built static as gVisor requires), the kind
// Modal runs.
func runscBuilds(t *testing.T) []runscBuild {
	current := os.Getenv("RUNSC")
	if current == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			current = filepath.Join(strings.TrimSpace(strings.Split(string(out), ":")[0]), "bin", "runsc")
		}
	}
	builds := []runscBuild{
		{name: "debian-20221219", bin: "/usr/bin/runsc", args: []string{"--fuse"}, badSeek: true},
		{name: "current", bin: current},
	}
	for _, b := range builds {
		if !exists(b.bin) {
			t.Fatalf("gVisor %s: %s is missing: run `make deps`", b.name, b.bin)
		}
	}
	return builds
}

// sandboxRun is what one run of test/gvisor/sandbox.sh printed.
type sandboxRun struct {
	results map[string]int // RESULT name code
	checks  []gvisorCheck  // CHECK lines, in order
	status  []api.Status   // STATUS lines, in order
	log     string         // the daemon's log
	output  string         // everything, for failures
}

// gvisorCheck is the JSON of one run of test/gvisor/check.py.
type gvisorCheck struct {
	Files       int      `json:"files"`
	Reads       int      `json:"reads"`
	WrongReads  int      `json:"wrong_reads"`
	Errors      []string `json:"errors"`
	ListedOK    bool     `json:"listed_ok"`
	StatOK      bool     `json:"stat_ok"`
	Walked      int      `json:"walked"`
	Ranged      int      `json:"ranged"`
	WrongRanged int      `json:"wrong_ranged"`
	NPZ         int      `json:"npz"`
	WrongNPZ    int      `json:"wrong_npz"`
	BadSeekEnd  int      `json:"seek_end_wrong"`
	Mmap        string   `json:"mmap"`
}

// TestGVisor runs the whole life of a mount inside gVisor sandboxes, as on
// Modal: an S3 server and the AWS CLI upload inside the sandbox, then
// s3cachefs mounts, the dataset is listed, stat'ed, walked, read whole
// three times in quick succession (cold, then cached), read at 200 random
// ranges and loaded with numpy, then prefetched, verified (--deep),
// dropped, remounted and read again (with zero GETs), and unmounted with a
// plain umount, which must stop the daemon. Every byte is compared with
// the local copy.
func TestGVisor(t *testing.T) {
	files := sourceFiles(t)
	vgw := s3server.Binary(t)
	for _, b := range runscBuilds(t) {
		t.Run(b.name, func(t *testing.T) {
			run := runSandbox(t, b, vgw)
			for _, step := range []string{"upload", "mount", "check", "prefetch", "verify", "drop",
				"mounted_after_drop", "remount", "recheck", "umount", "daemon_exit"} {
				if code, ok := run.results[step]; !ok || code != 0 {
					t.Errorf("step %s: exit %d (reported: %v)", step, code, ok)
				}
			}
			if len(run.checks) != 2 || len(run.status) != 2 {
				t.Fatalf("sandbox printed %d checks and %d statuses, want 2 each\n%s", len(run.checks), len(run.status), run.output)
			}
			for i, c := range run.checks {
				rounds := []int{3, 2}[i]
				wantCheck(t, c, files, rounds, b.badSeek)
			}
			first, second := run.status[0], run.status[1]
			if first.ReadMode != "daemon" || first.BlocksChecked == 0 || first.S3GetRequests == 0 {
				t.Errorf("status in the sandbox: %+v, want daemon mode, checked blocks and GETs", first)
			}
			if second.S3GetRequests != 0 {
				t.Errorf("after the remount, reading everything made %d GETs, want 0", second.S3GetRequests)
			}
			if strings.Contains(run.log, "WARNING: DATA RACE") {
				t.Errorf("data race in the daemon:\n%s", run.log)
			}
			t.Logf("gVisor %s: %s; fallbacks: %q; mmap of a file on the mount: %s", b.name, first.FUSE, first.Fallbacks, run.checks[0].Mmap)
			if n := strings.Count(run.log, "the mount table read lacked the mount"); n > 0 {
				t.Logf("the daemon's mount-table reads missed its mount %d times (the mountpoint said otherwise)", n)
			}
			if run.checks[0].Mmap == "wrong bytes" {
				t.Errorf("mmap of a file on the mount gave wrong bytes")
			}
			if t.Failed() {
				t.Logf("sandbox output:\n%s", run.output)
			}
		})
	}
}

// wantCheck asserts one checker run found every file, right, every time.
func wantCheck(t *testing.T, c gvisorCheck, files map[string][]byte, rounds int, badSeek bool) {
	t.Helper()
	var data, npz int
	for name := range files {
		if !strings.HasSuffix(name, "manifest.json") {
			data++
		}
		if strings.HasSuffix(name, ".npz") {
			npz++
		}
	}
	if c.Files != data || c.Reads != data*rounds || c.WrongReads != 0 || len(c.Errors) != 0 {
		t.Errorf("whole reads: %d files, %d reads, %d wrong, errors %q; want %d files read %d times, none wrong",
			c.Files, c.Reads, c.WrongReads, c.Errors, data, rounds)
	}
	if !c.ListedOK || !c.StatOK || c.Walked != len(files) {
		t.Errorf("listing ok %v, stat ok %v, walk found %d files, want %d", c.ListedOK, c.StatOK, c.Walked, len(files))
	}
	if badSeek {
		// That runsc's lseek: the checker skips numpy, and says so.
		if c.BadSeekEnd == 0 {
			t.Errorf("lseek(SEEK_END) was right on every file: this runsc no longer has the bug the test allows for")
		}
		npz = 0
	} else if c.BadSeekEnd != 0 {
		t.Errorf("lseek(SEEK_END) missed the size on %d files", c.BadSeekEnd)
	}
	if c.Ranged != 200 || c.WrongRanged != 0 || c.NPZ != npz || c.WrongNPZ != 0 {
		t.Errorf("ranged reads %d (%d wrong), numpy loads %d (%d wrong); want 200 and %d, none wrong",
			c.Ranged, c.WrongRanged, c.NPZ, c.WrongNPZ, npz)
	}
}

// runSandbox runs test/gvisor/sandbox.sh under b and parses what it printed.
func runSandbox(t *testing.T, b runscBuild, vgw string) sandboxRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	script, _ := filepath.Abs("gvisor/sandbox.sh")
	check, _ := filepath.Abs("gvisor/check.py")
	// runsc keeps sockets in --root, and a unix socket's path must stay
	// short: not under t.TempDir().
	root, err := os.MkdirTemp("/tmp", "runsc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	args := append(append([]string{}, b.args...),
		"--network=none", "--ignore-cgroups", "--root", root,
		"do", "/bin/bash", script, suite.bin, vgw, suite.dataset, check)
	cmd := exec.CommandContext(ctx, b.bin, args...)
	cmd.Dir = "/"
	// Old runsc also keeps a socket in $TMPDIR.
	cmd.Env = append(os.Environ(), "TMPDIR=/tmp")
	var out bytes.Buffer
	// A pipe, not a terminal: gVisor's output is lost otherwise.
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	run := parseSandbox(out.String())
	if err != nil {
		t.Fatalf("runsc %s: %v\n%s", b.name, err, run.output)
	}
	return run
}

func parseSandbox(output string) sandboxRun {
	run := sandboxRun{results: map[string]int{}, output: output}
	sc := bufio.NewScanner(strings.NewReader(output))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var inLog bool
	var log strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "LOG-BEGIN":
			inLog = true
		case line == "LOG-END":
			inLog = false
		case inLog:
			log.WriteString(line + "\n")
		case strings.HasPrefix(line, "RESULT "):
			f := strings.Fields(line)
			if len(f) == 3 {
				code, err := strconv.Atoi(f[2])
				if err != nil {
					code = -1
				}
				run.results[f[1]] = code
			}
		case strings.HasPrefix(line, "CHECK "):
			var c gvisorCheck
			if json.Unmarshal([]byte(strings.TrimPrefix(line, "CHECK ")), &c) == nil {
				run.checks = append(run.checks, c)
			}
		case strings.HasPrefix(line, "STATUS "):
			var s api.Status
			if json.Unmarshal([]byte(strings.TrimPrefix(line, "STATUS ")), &s) == nil {
				run.status = append(run.status, s)
			}
		}
	}
	run.log = log.String()
	return run
}
