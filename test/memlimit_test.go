package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"s3cachefs/cmd/s3cachefs/api"
)

// The memory-limit test runs the daemon in a real cgroup (v1, as on this
// machine: /sys/fs/cgroup/memory) with a small memory limit and prefetches
// a dataset many times the limit's size through it.
//
// It runs a build without the race detector. The race runtime keeps
// shadow memory for every byte of the Go heap outside what Go's memory
// limit governs, so a race-built daemon takes several times the memory of
// the one users run (measured in 192 MiB: today's race build is OOM-killed
// at once, even with GOMEMLIMIT=144MiB; the plain build peaks at 90 MiB).
// The limits this test proves are those of the binary users run. Races in
// the sizing code are the unit tests' to find (cmd/s3cachefs, -race), and
// the daemon's other paths run race-built in every other e2e test.

const cgroupV1Memory = "/sys/fs/cgroup/memory"

// plainBin is the s3cachefs binary built without -race, next to suite.bin
// (daemonPIDs knows it by its name).
var plainBin struct {
	once sync.Once
	path string
	err  error
}

// plainBinary builds cmd/s3cachefs without the race detector, once.
func plainBinary(t *testing.T) string {
	t.Helper()
	plainBin.once.Do(func() {
		plainBin.path = suite.bin + plainSuffix
		cmd := exec.Command("go", "build", "-o", plainBin.path, "./cmd/s3cachefs")
		cmd.Dir = ".." // the module root
		if out, err := cmd.CombinedOutput(); err != nil {
			plainBin.err = fmt.Errorf("build s3cachefs without -race: %v\n%s", err, out)
		}
	})
	if plainBin.err != nil {
		t.Fatal(plainBin.err)
	}
	return plainBin.path
}

// plainSuffix names the plain build beside suite.bin.
const plainSuffix = "-plain"

// memCgroup is a cgroup v1 memory cgroup made by a test.
type memCgroup struct {
	dir   string
	limit int64
}

// newMemCgroup creates a memory cgroup with a limit of limit bytes and
// removes it when t ends: the processes still in it are moved back to the
// test's own cgroup first (a cgroup with members cannot be removed).
func newMemCgroup(t *testing.T, limit int64) *memCgroup {
	t.Helper()
	if _, err := os.Stat(filepath.Join(cgroupV1Memory, "memory.limit_in_bytes")); err != nil {
		t.Fatalf("this test needs the cgroup v1 memory controller at %s: %v", cgroupV1Memory, err)
	}
	cg := &memCgroup{dir: filepath.Join(cgroupV1Memory, "s3cachefs-test-"+randomName(t)), limit: limit}
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	t.Cleanup(func() { cg.remove(t) })
	cg.write(t, "memory.limit_in_bytes", strconv.FormatInt(limit, 10))
	return cg
}

func randomName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func (cg *memCgroup) write(t *testing.T, file, value string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(cg.dir, file), []byte(value), 0o644); err != nil {
		t.Fatalf("cgroup %s: %v", file, err)
	}
}

// read returns the cgroup file as a number, or the number after key in a
// "key value" file.
func (cg *memCgroup) read(t *testing.T, file, key string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cg.dir, file))
	if err != nil {
		t.Fatalf("cgroup: %v", err)
	}
	s := strings.TrimSpace(string(b))
	if key != "" {
		s = ""
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, key+" "); ok {
				s = v
			}
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("cgroup %s %s: %q is not a number", file, key, s)
	}
	return n
}

// pids returns the processes in the cgroup.
func (cg *memCgroup) pids(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cg.dir, "cgroup.procs"))
	if err != nil {
		t.Fatalf("cgroup: %v", err)
	}
	return strings.Fields(string(b))
}

// remove moves the cgroup's processes to the test's own memory cgroup and
// removes it.
func (cg *memCgroup) remove(t *testing.T) {
	home := filepath.Join(cgroupV1Memory, ownMemCgroup(t), "cgroup.procs")
	for _, pid := range cg.pids(t) {
		t.Errorf("process %s still in cgroup %s at the end; moving it out", pid, cg.dir)
		if err := os.WriteFile(home, []byte(pid), 0o644); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Errorf("move %s out of the cgroup: %v", pid, err)
		}
	}
	if err := os.Remove(cg.dir); err != nil {
		t.Errorf("remove cgroup: %v", err)
	}
}

// ownMemCgroup is the test process's cgroup in the v1 memory hierarchy.
func ownMemCgroup(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if parts := strings.SplitN(line, ":", 3); len(parts) == 3 && parts[1] == "memory" {
			return parts[2]
		}
	}
	return "/"
}

// mountIn mounts SOURCE with the plain build inside cg: a shell puts
// itself into the cgroup and then becomes `s3cachefs mount`, whose
// background daemon is born there. env is added to its environment, which
// has no GOMEMLIMIT otherwise.
func (e *env) mountIn(t *testing.T, cg *memCgroup, bin string, env []string, extra ...string) *mounted {
	t.Helper()
	m := &mounted{dir: newMountpoint(t), cache: t.TempDir()}
	args := append([]string{"-c", `echo $$ > "$0" && exec "$@"`, filepath.Join(cg.dir, "cgroup.procs"),
		bin, "mount", source, m.dir, "--cache-dir", m.cache,
		"--endpoint-url", e.proxy.Endpoint, "--force-path-style"}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", args...)
	cmd.Env = e.childEnv(append([]string{"GOMEMLIMIT="}, env...)...)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	t.Cleanup(func() { e.cleanup(t, m) })
	if err != nil {
		t.Fatalf("mount in cgroup %s: %v\n%s\ndaemon log:\n%s", cg.dir, err, out, logTail(m.cache))
	}
	m.pid = e.status(t, m).PID
	in := false
	for _, pid := range cg.pids(t) {
		in = in || pid == strconv.Itoa(m.pid)
	}
	if !in {
		t.Fatalf("daemon %d is not in cgroup %s (members: %v)", m.pid, cg.dir, cg.pids(t))
	}
	return m
}

// memDataset is many times the limits' size: large files (whose parts keep
// every GET the daemon allows in flight) and many small ones (objects,
// index records, listings).
type memDataset struct {
	sums map[string][32]byte // SHA-256 by path under the prefix
	size int64
}

const (
	memLargeFiles = 8
	memLargeSize  = 48<<20 + 12345 // not a whole number of blocks
	memSmallFiles = 1000
)

// uploadMemDataset puts the dataset into the bucket and returns the
// SHA-256 of every object.
func (e *env) uploadMemDataset(t *testing.T) memDataset {
	t.Helper()
	ds := memDataset{sums: map[string][32]byte{}}
	rng := mrand.NewChaCha8([32]byte{10, 5})
	objs := map[string][]byte{}
	add := func(name string, n int) {
		b := make([]byte, n)
		rng.Read(b)
		objs[prefix+"/"+name] = b
		ds.sums[name] = sha256.Sum256(b)
		ds.size += int64(n)
	}
	for i := range memLargeFiles {
		add(fmt.Sprintf("train/big_%02d.npz", i), memLargeSize)
	}
	for i := range memSmallFiles {
		add(fmt.Sprintf("meta/rec_%05d.json", i), 2<<10+i*37%4096)
	}
	e.srv.PutMany(t, bucket, objs)
	return ds
}

// vmHWM returns the peak resident memory of pid.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	return procStatusBytes(t, pid, "VmHWM")
}

// TestMemoryLimit: in a cgroup with a memory limit, the daemon finds the
// limit, sizes itself to it (Go's memory limit, GETs in flight, objects
// per prefetch job) and says so in status and its log; a prefetch of a
// dataset many times the limit finishes with no OOM kill and the same
// daemon, and every byte read back equals S3's. 192 MiB is the limit the
// issue names; in 64 MiB the daemon as it was, with 32 GETs in flight,
// is OOM-killed at once. The second one is mounted without passthrough,
// so that reading back goes through the daemon, in the cgroup, too.
func TestMemoryLimit(t *testing.T) {
	bin := plainBinary(t)
	e := newEnv(t)
	ds := e.uploadMemDataset(t)
	for _, tc := range []struct {
		name             string
		limit            int64
		fetches, objects int
		flags            []string
	}{
		{"192MiB", 192 << 20, 12, 12, nil},
		{"64MiB", 64 << 20, 4, 4, []string{"--passthrough=false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cg := newMemCgroup(t, tc.limit)
			m := e.mountIn(t, cg, bin, nil, tc.flags...)
			mem := e.status(t, m).Memory
			limitFile := filepath.Join(cg.dir, "memory.limit_in_bytes")
			if mem.CgroupLimit != tc.limit || mem.CgroupLimitFile != limitFile ||
				mem.GoMemoryLimit != tc.limit*3/4 || mem.GoMemoryLimitFrom != "cgroup" ||
				mem.MaxFetches != tc.fetches || mem.PrefetchObjects != tc.objects {
				t.Errorf("status memory: %+v; want the limit %d from %s, Go's limit 3/4 of it, %d GETs, %d objects",
					mem, tc.limit, limitFile, tc.fetches, tc.objects)
			}
			if r := e.run(t, "status", "--mount", m.dir); !strings.Contains(r.stdout, fmt.Sprintf("cgroup limit %d.0 MiB (%s)", tc.limit>>20, limitFile)) {
				t.Errorf("status does not name the cgroup limit:\n%s", r.stdout)
			}
			if log := readLog(m.cache); !strings.Contains(log, "cgroup memory limit found") || !strings.Contains(log, limitFile) {
				t.Errorf("the daemon log does not say which limit it found:\n%s", log)
			}

			start := time.Now()
			r := e.run(t, "prefetch", "--mount", m.dir, "--json", "--interval", "100ms", "train", "meta")
			took := time.Since(start)
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			var last api.Job
			if err := jsonUnmarshal(lines[len(lines)-1], &last); err != nil || r.code != 0 {
				t.Errorf("prefetch in %s: %v\n%s\ndaemon log:\n%s", tc.name, err, r, logTail(m.cache))
			}
			var files, size int64
			for _, f := range last.Folders {
				files, size = files+f.FilesDone, size+f.BytesDone
			}
			if last.State != "done" || files != int64(len(ds.sums)) || size != ds.size {
				t.Errorf("prefetch ended %q with %d files, %d bytes; want done, %d files, %d bytes",
					last.State, files, size, len(ds.sums), ds.size)
			}
			if ooms := cg.read(t, "memory.oom_control", "oom_kill"); ooms != 0 {
				t.Fatalf("%d OOM kills in the cgroup during the prefetch", ooms)
			}
			if !alive(m.pid) {
				t.Fatalf("daemon %d is gone after the prefetch", m.pid)
			}
			if pid := e.status(t, m).PID; pid != m.pid {
				t.Fatalf("daemon is pid %d after the prefetch, was %d", pid, m.pid)
			}
			t.Logf("%s: prefetched %d MiB in %v; cgroup peak %d MiB (failcnt %d), daemon VmHWM %d MiB",
				tc.name, ds.size>>20, took.Round(time.Millisecond), cg.read(t, "memory.max_usage_in_bytes", "")>>20,
				cg.read(t, "memory.failcnt", ""), vmHWM(t, m.pid)>>20)

			// Every byte, checked in the daemon and read back through the mount.
			rs, r := e.verify(t, m, "--complete", "--deep", "train", "meta")
			if r.code != 0 || len(rs) != 2 || rs[0].Checked+rs[1].Checked != int64(len(ds.sums)) {
				t.Errorf("verify --complete --deep: %+v\n%s", rs, r)
			}
			for name, want := range ds.sums {
				f, err := os.Open(filepath.Join(m.dir, name))
				if err != nil {
					t.Fatal(err)
				}
				h := sha256.New()
				_, err = io.Copy(h, f)
				f.Close()
				if err != nil || !bytes.Equal(h.Sum(nil), want[:]) {
					t.Fatalf("read back %s: %v, or bytes that differ from S3's", name, err)
				}
			}
			if ooms := cg.read(t, "memory.oom_control", "oom_kill"); ooms != 0 || !alive(m.pid) {
				t.Fatalf("%d OOM kills in the cgroup while reading back (daemon alive: %v)", ooms, alive(m.pid))
			}
			t.Logf("%s: after reading back: cgroup peak %d MiB, daemon VmHWM %d MiB",
				tc.name, cg.read(t, "memory.max_usage_in_bytes", "")>>20, vmHWM(t, m.pid)>>20)
			e.waitNoOpenFiles(t, m)
			t.Cleanup(func() { dumpIfStuck(t, m) })
			e.drop(t, m)
		})
	}

	// What the user sets wins: a flag (here as a mount option, as fstab
	// gives it) and $GOMEMLIMIT; what is not set is still sized.
	t.Run("explicit", func(t *testing.T) {
		cg := newMemCgroup(t, 64<<20)
		m := e.mountIn(t, cg, bin, []string{"GOMEMLIMIT=40MiB"}, "-o", "max_fetches=6")
		mem := e.status(t, m).Memory
		if mem.CgroupLimit != 64<<20 || mem.GoMemoryLimit != 40<<20 || mem.GoMemoryLimitFrom != "GOMEMLIMIT" ||
			mem.MaxFetches != 6 || mem.MaxFetchesFrom != "flag" || mem.PrefetchObjects != 4 || mem.PrefetchObjectsFrom != "cgroup" {
			t.Errorf("status memory: %+v; want the 64 MiB limit, GOMEMLIMIT's 40 MiB, the option's 6 GETs, 4 objects sized", mem)
		}
		e.drop(t, m)
	})
}

// dumpIfStuck logs where a daemon that is still running after a failed
// test is: its threads' kernel stacks, then its goroutines (SIGQUIT makes
// the Go runtime write them to the daemon log, and exit).
func dumpIfStuck(t *testing.T, m *mounted) {
	if !t.Failed() || !alive(m.pid) {
		return
	}
	var b strings.Builder
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", m.pid))
	for _, task := range tasks {
		st, _ := os.ReadFile(filepath.Join(task, "stat"))
		stack, _ := os.ReadFile(filepath.Join(task, "stack"))
		fmt.Fprintf(&b, "%s\n%s\n", strings.TrimSpace(string(st)), stack)
	}
	t.Logf("daemon %d still runs; its threads:\n%s", m.pid, b.String())
	if err := syscall.Kill(m.pid, syscall.SIGQUIT); err == nil {
		if err := waitExit(m.pid, exitTimeout); err != nil {
			t.Log(err)
		}
		t.Logf("daemon log with goroutines:\n%s", readLog(m.cache))
	}
}
