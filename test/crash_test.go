package test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"s3cachefs/index"
)

// crashSeed replays a crash loop: go test -run TestCrashLoop -crash.seed N.
// 0 draws a new seed, which the test logs.
var crashSeed = flag.Uint64("crash.seed", 0, "seed of TestCrashLoop's dataset and kill moments (0: random, logged)")

const (
	crashKills = 20
	crashFiles = 6
	crashDir   = "crash" // the dataset's folder under the mount
	// crashRate slows each GET body while a crash is due, so that the kill
	// lands mid-transfer: the job's 24 MiB then take about six seconds.
	crashRate = 1 << 20
	// crashReaders read at random beside the prefetch until the kill.
	crashReaders = 3
)

// crashFlags make small parts (one GET per block) and one object
// at a time, so that a kill finds some parts committed, some in flight,
// and the job takes long enough for the kill to land in it.
var crashFlags = []string{"--part-size", "1MiB", "--prefetch-objects", "1"}

// crashDeadLine is what `mount` says when it cleans up a dead daemon's
// mount; group 1 is the mountpoint.
var crashDeadLine = regexp.MustCompile(`^s3cachefs: the daemon of (.+) \(pid \d+\) had died; removed its mount$`)

// crashTally counts what the loop checked.
type crashTally struct {
	kills, midJob, filesChecked, rangesChecked, wrong atomic.Int64
}

// TestCrashLoop kills the daemon with SIGKILL at crashKills seeded random
// moments while a prefetch job and random readers run against a throttled
// S3. After each kill: the index passes index.Check; the next `mount` on
// the same mountpoint and cache dir removes the dead mount and says so in
// one line; the job resumes by itself and finishes; every file reads back
// byte-identical to S3. Then the files are unpinned and evicted, so that
// the next round's job has everything to fetch again.
func TestCrashLoop(t *testing.T) {
	seed := *crashSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("crash loop seed %d (replay with -crash.seed %d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	start := time.Now()
	e := newEnv(t)
	files := crashDataset(t, e, rng)
	mp, cache := newMountpoint(t), t.TempDir()
	m := &mounted{dir: mp, cache: cache}
	t.Cleanup(func() { e.cleanup(t, m) })
	var tally crashTally
	crashRemount(t, e, m, false)
	for range crashKills {
		resume := crashRound(t, e, m, files, rng, &tally)
		crashRemount(t, e, m, true)
		crashAfterKill(t, e, m, resume, files, &tally)
	}
	t.Logf("RELIABILITY crashes=%d files_checked=%d wrong=%d (mid_job=%d ranges_checked=%d seed=%d time=%v)",
		tally.kills.Load(), tally.filesChecked.Load(), tally.wrong.Load(),
		tally.midJob.Load(), tally.rangesChecked.Load(), seed, time.Since(start).Round(time.Second))
	if tally.wrong.Load() != 0 {
		t.Errorf("%d reads returned bytes that differ from S3's", tally.wrong.Load())
	}
	// Kills that land after the job ended prove less; the rate is chosen
	// so that most do not.
	if tally.midJob.Load() < crashKills/2 {
		t.Errorf("only %d of %d kills landed while the job ran; slow crashRate down", tally.midJob.Load(), crashKills)
	}
}

// crashDataset uploads crashFiles objects of 3 to 5 MiB (not whole
// blocks, so last blocks are partial) under crashDir and returns them by
// mount-relative name.
func crashDataset(t *testing.T, e *env, rng *rand.Rand) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	objs := map[string][]byte{}
	for i := range crashFiles {
		b := make([]byte, 3<<20+rng.IntN(2<<20))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		name := fmt.Sprintf("%s/f%02d.bin", crashDir, i)
		files[name] = b
		objs[prefix+"/"+name] = b
	}
	e.srv.PutMany(t, bucket, objs)
	return files
}

// crashRemount mounts m again on the same mountpoint and cache dir. After
// a kill (dead is true) the dead mount must still be there before, and
// `mount` must remove it and say so in exactly one line.
func crashRemount(t *testing.T, e *env, m *mounted, dead bool) {
	t.Helper()
	if dead {
		// A listing asks the daemon (a stat may be answered from the
		// kernel's attribute cache).
		if _, err := os.ReadDir(m.dir); !isMounted(t, m.dir) || !errors.Is(err, syscall.ENOTCONN) {
			t.Fatalf("after the kill %s should be a dead mount: mounted %v, readdir %v", m.dir, isMounted(t, m.dir), err)
		}
	}
	r := e.run(t, append([]string{"mount", source, m.dir, "--cache-dir", m.cache,
		"--endpoint-url", e.proxy.Endpoint, "--force-path-style"}, crashFlags...)...)
	if r.code != 0 {
		t.Fatalf("mount (after a kill: %v): %s\ndaemon log:\n%s", dead, r, logTail(m.cache))
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	switch {
	case !dead && r.stderr != "":
		t.Errorf("first mount printed on stderr: %q", r.stderr)
	case dead && (len(lines) != 1 || !crashDeadLine.MatchString(lines[0]) ||
		crashDeadLine.FindStringSubmatch(lines[0])[1] != m.dir):
		t.Errorf("mount over a dead mount: want one line saying it removed it, got %q", r.stderr)
	}
	if strings.Contains(strings.ToLower(r.stdout+r.stderr), "not connected") {
		t.Errorf("mount mentions a broken connection: %s", r)
	}
	if n := len(mountsAt(t, m.dir)); n != 1 {
		t.Fatalf("%d mounts at %s after mount, want 1", n, m.dir)
	}
	if _, err := os.ReadDir(m.dir); err != nil {
		t.Fatalf("list %s after remount: %v", m.dir, err)
	}
	m.pid = e.status(t, m).PID
}

// crashRound unpins and evicts every file, starts a prefetch job and
// readers on a slow link, and kills the daemon at a random moment; the
// index must then pass index.Check. It returns the job's ID if the index
// holds it as running (the kill landed mid-job), else "".
func crashRound(t *testing.T, e *env, m *mounted, files map[string][]byte, rng *rand.Rand, tally *crashTally) string {
	t.Helper()
	waitFor(t, 10*time.Second, "no open files on "+m.dir, func() bool {
		return e.status(t, m).OpenFiles == 0
	})
	if r := e.run(t, "prefetch", "--mount", m.dir, "--unpin", crashDir); r.code != 0 {
		t.Fatalf("prefetch --unpin: %s", r)
	}
	if r := e.run(t, "evict", "--mount", m.dir, crashDir); r.code != 0 {
		t.Fatalf("evict: %s", r)
	}
	if st := e.status(t, m); st.CachedBytes != 0 {
		t.Fatalf("%d bytes still cached after evict", st.CachedBytes)
	}
	e.proxy.SetRate(crashRate)
	job := e.startJob(t, m, crashDir).ID
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for i := range crashReaders {
		readers.Add(1)
		r := rand.New(rand.NewPCG(rng.Uint64(), uint64(i)))
		go func() {
			defer readers.Done()
			crashReader(m.dir, files, r, stop, tally)
		}()
	}
	// The kill moment: anywhere in the job's first seconds.
	<-time.After(time.Duration(50+rng.IntN(3000)) * time.Millisecond)
	if err := syscall.Kill(m.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(m.pid, exitTimeout); err != nil {
		t.Fatal(err)
	}
	close(stop)
	readers.Wait()
	tally.kills.Add(1)
	path := filepath.Join(m.cache, "index.db")
	if err := index.Check(path); err != nil {
		t.Fatalf("kill %d: index check: %v", tally.kills.Load(), err)
	}
	// What the index says of the job at the kill decides what the
	// remount must do: resume it, or list it done.
	db, err := index.Open(path, index.Options{})
	if err != nil {
		t.Fatalf("kill %d: open index: %v", tally.kills.Load(), err)
	}
	j, ok, err := db.Job(job)
	db.Close()
	if err != nil || !ok {
		t.Fatalf("kill %d: job %s in the index: %v, found %v", tally.kills.Load(), job, err, ok)
	}
	if j.State != index.JobRunning {
		return ""
	}
	tally.midJob.Add(1)
	return job
}

// crashReader reads random ranges of random files until stop, or until
// the daemon's death fails a read; every byte it gets must be S3's.
func crashReader(dir string, files map[string][]byte, rng *rand.Rand, stop <-chan struct{}, tally *crashTally) {
	names := sortedNames(files)
	buf := make([]byte, 64<<10)
	for {
		select {
		case <-stop:
			return
		default:
		}
		name := names[rng.IntN(len(names))]
		want := files[name]
		off := rng.IntN(len(want))
		n := min(1+rng.IntN(len(buf)), len(want)-off)
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return // the daemon is gone
		}
		got, err := f.ReadAt(buf[:n], int64(off))
		f.Close()
		if got > 0 && !bytes.Equal(buf[:got], want[off:off+got]) {
			tally.wrong.Add(1)
		}
		if err != nil {
			return
		}
		tally.rangesChecked.Add(1)
	}
}

// crashAfterKill checks a remount after a kill: the job cut short (if
// any) resumes by itself, nobody starting it again, and finishes at full
// speed; every file reads back as S3 has it.
func crashAfterKill(t *testing.T, e *env, m *mounted, job string, files map[string][]byte, tally *crashTally) {
	t.Helper()
	e.proxy.SetRate(0)
	if job != "" {
		waitFor(t, time.Minute, "the resumed job to finish", func() bool {
			switch state := crashJobState(t, e, m, job); state {
			case "failed", "cancelled":
				t.Fatalf("resumed job %s ended %s", job, state)
			case "done":
				return true
			}
			return false
		})
	}
	for _, name := range sortedNames(files) {
		got, err := os.ReadFile(filepath.Join(m.dir, name))
		tally.filesChecked.Add(1)
		switch {
		case err != nil:
			t.Errorf("read %s after the kill: %v", name, err)
		case !bytes.Equal(got, files[name]):
			tally.wrong.Add(1)
			t.Errorf("read %s after the kill: bytes differ from S3's at offset %d", name, firstDiff(got, files[name]))
		}
	}
}

// crashJobState returns the state status shows for job; the job must be
// listed (a remount resumes it, nobody starts it again).
func crashJobState(t *testing.T, e *env, m *mounted, job string) string {
	t.Helper()
	state := e.jobState(t, m, job)
	if state == "" {
		t.Fatalf("job %s is not listed after the remount", job)
	}
	return state
}
