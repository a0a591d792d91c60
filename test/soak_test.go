package test

import (
	"bytes"
	"flag"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// soakE2EFor is how long TestSoakMount reads. The default keeps `make
// test` quick; a local run asks for more:
// go test -race -run TestSoakMount ./test/ -soak.e2e 10m
var soakE2EFor = flag.Duration("soak.e2e", 20*time.Second, "how long TestSoakMount runs its readers (e.g. 10m locally)")

const (
	soakE2EReaders = 64
	// soakStuck is how long readers may take to return once the run is
	// over before the test calls it a deadlock: far more than any one
	// read needs, even under -race on a loaded machine.
	soakStuck = 90 * time.Second
	// soakFetches is the mount's --max-fetches. The daemon's S3 client
	// keeps up to that many connections plus 16 for listings open
	// between requests, each with two goroutines of net/http; go-fuse
	// keeps a few request readers. That is how many more goroutines the
	// daemon may have idle after the run than before it.
	soakFetches   = 16
	soakIdleSlack = 2*(soakFetches+16) + 16
)

// soakRun is the shared state of TestSoakMount's readers and sampler.
type soakRun struct {
	t     *testing.T
	root  string
	files map[string][]byte
	names []string

	reads, checked, wrong, failures atomic.Int64
}

// soakSample is one look at the daemon.
type soakSample struct {
	rss        int64 // VmRSS in bytes
	goroutines int   // go_goroutines from its /metrics
	// nextGC is go_memstats_next_gc_bytes: the heap size that triggers
	// the next GC, a fixed multiple of the heap live after the last one.
	// It tells a growing Go heap from RSS the race runtime adds.
	nextGC int64
}

// TestSoakMount runs 64 readers over the dataset's files through a real
// mount for -soak.e2e: random reads, whole files read through, and NPZ-style
// tail-then-members reads, every byte checked against the source, with a
// cache limit that forces eviction and a prefetch of dev/ running. The
// page cache of each file is dropped at each open, so reads reach the
// daemon. It samples the daemon's RSS and goroutines and fails if either
// grows over the run, if any reader is stuck once the run is over
// (deadlock: the daemon's goroutines are dumped to its log), or if the
// goroutines do not come back to their idle count once every file is
// closed. The race detector's findings in the daemon's log fail it too
// (harness cleanup).
func TestSoakMount(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	addr := closedAddr(t)
	m := e.mount(t, "--max-cache-size", "16MiB", "--metrics-addr", addr, "--prefetch", "dev",
		"--max-fetches", strconv.Itoa(soakFetches))
	s := &soakRun{t: t, root: m.dir, files: files, names: sortedNames(files)}
	idleBefore := soakScrape(t, m.pid, addr).goroutines

	start := time.Now()
	deadline := start.Add(*soakE2EFor)
	var readers sync.WaitGroup
	for i := range soakE2EReaders {
		readers.Go(func() { s.reader(deadline, uint64(i)) })
	}
	samples := s.sampleUntil(deadline, m.pid, addr)
	soakWaitReaders(t, &readers, m)
	elapsed := time.Since(start)

	// Every file is closed: once the kernel has released them all, the
	// daemon must be back to its idle goroutines, give or take its pool
	// of S3 connections.
	e.waitNoOpenFiles(t, m)
	idleAfter := soakScrape(t, m.pid, addr).goroutines
	st := e.status(t, m)

	rssFirst, rssLast := soakThirds(samples, func(x soakSample) int64 { return x.rss })
	heapFirst, heapLast := soakThirds(samples, func(x soakSample) int64 { return x.nextGC })
	gFirst, gLast := soakThirds(samples, func(x soakSample) int64 { return int64(x.goroutines) })
	t.Logf("RELIABILITY soak readers=%d seconds=%.0f reads=%d bytes_checked=%d wrong=%d rss_first=%d rss_last=%d "+
		"goroutines_first=%d goroutines_last=%d goroutines_idle_before=%d goroutines_idle_after=%d "+
		"gc_target_first=%d gc_target_last=%d bytes_from_s3=%d bytes_from_ssd=%d evictions=%d uncached=%d samples=%d",
		soakE2EReaders, elapsed.Seconds(), s.reads.Load(), s.checked.Load(), s.wrong.Load(), rssFirst, rssLast,
		gFirst, gLast, idleBefore, idleAfter, heapFirst, heapLast, st.BytesFromS3, st.BytesFromSSD, st.Evictions, st.UncachedReads, len(samples))
	t.Logf("daemon RSS over the run, MiB: %v", soakMiB(samples, func(x soakSample) int64 { return x.rss }))
	t.Logf("daemon GC target over the run, MiB: %v", soakMiB(samples, func(x soakSample) int64 { return x.nextGC }))

	if s.wrong.Load() != 0 || s.failures.Load() != 0 {
		t.Errorf("%d reads returned wrong bytes, %d failed", s.wrong.Load(), s.failures.Load())
	}
	if s.checked.Load() == 0 || st.BytesFromSSD == 0 {
		t.Errorf("the soak checked %d bytes, %d of them from SSD: it did not exercise the cache", s.checked.Load(), st.BytesFromSSD)
	}
	if len(samples) < 6 {
		t.Fatalf("only %d samples of the daemon: too few to judge its memory", len(samples))
	}
	// The Go heap the daemon keeps live (its GC target) must stay level:
	// a leak of even a small buffer per read grows it by hundreds of MiB
	// over a run of hundreds of thousands of reads. Its RSS gets more
	// slack: under -race it creeps by some tens of MiB over minutes (the
	// race runtime's own memory; a daemon built without -race stays within
	// a few MiB over three minutes).
	if limit := heapFirst + max(heapFirst/2, 16<<20); heapLast > limit {
		t.Errorf("daemon GC target grew from %d bytes (first third of the run) to %d (last third), over %d", heapFirst, heapLast, limit)
	}
	if limit := rssFirst + max(rssFirst/2, 64<<20); rssLast > limit {
		t.Errorf("daemon RSS grew from %d bytes (first third of the run) to %d (last third), over %d", rssFirst, rssLast, limit)
	}
	if limit := 2*gFirst + 50; gLast > limit {
		t.Errorf("daemon goroutines grew from %d (first third) to %d (last third), over %d", gFirst, gLast, limit)
	}
	if idleAfter > idleBefore+soakIdleSlack {
		t.Errorf("daemon has %d goroutines idle after the run, %d before it: goroutines leaked", idleAfter, idleBefore)
		soakDumpDaemon(t, m)
		t.FailNow()
	}
	e.drop(t, m)
}

// reader opens files until deadline, half of the time one of the first
// three so that readers overlap, and reads each in one of three patterns.
func (s *soakRun) reader(deadline time.Time, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 3))
	buf := make([]byte, 1<<20)
	for time.Now().Before(deadline) {
		name := s.names[r.IntN(len(s.names))]
		if r.IntN(2) == 0 {
			name = s.names[r.IntN(3)]
		}
		f, err := os.Open(filepath.Join(s.root, name))
		if err != nil {
			s.errorf("open %s: %v", name, err)
			return
		}
		// Drop the file's page cache so that its reads reach the daemon
		// (the kernel keeps it across opens of an unchanged file).
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			s.errorf("fadvise %s: %v", name, err)
		}
		want := s.files[name]
		size := int64(len(want))
		ok := true
		switch r.IntN(3) {
		case 0: // a DataLoader reading the file through
			for off := int64(0); off < size && ok; off += 128 << 10 {
				ok = s.read(f, name, off, 128<<10, buf)
			}
		case 1: // numpy: the ZIP directory at the end, then a member
			ok = s.read(f, name, max(size-22, 0), 22, buf) && s.read(f, name, max(size-64<<10, 0), 4096, buf)
			for off := r.Int64N(size + 1); off < size && ok; off += 256 << 10 {
				ok = s.read(f, name, off, 256<<10, buf)
			}
		default:
			for range 1 + r.IntN(32) {
				if ok = s.read(f, name, r.Int64N(size+1), 1+r.IntN(len(buf)), buf); !ok {
					break
				}
			}
		}
		f.Close()
		if !ok {
			return
		}
	}
}

// read preads n bytes at off and checks them against the source.
func (s *soakRun) read(f *os.File, name string, off int64, n int, buf []byte) bool {
	want := s.files[name]
	want = want[min(off, int64(len(want))):min(off+int64(n), int64(len(want)))]
	got, err := f.ReadAt(buf[:n], off)
	s.reads.Add(1)
	if err != nil && !(err == io.EOF && got == len(want)) {
		s.errorf("read %s %d bytes at %d: %v", name, n, off, err)
		return false
	}
	if got != len(want) || !bytes.Equal(buf[:got], want) {
		s.wrong.Add(1)
		s.errorf("read %s %d bytes at %d: got %d bytes that differ from the source's %d", name, n, off, got, len(want))
		return false
	}
	s.checked.Add(int64(got))
	return true
}

// errorf reports a failure from any reader; after the first few only the
// count grows.
func (s *soakRun) errorf(format string, args ...any) {
	if s.failures.Add(1) <= 10 {
		s.t.Errorf(format, args...)
	}
}

// sampleUntil looks at the daemon every second (thirty times over a
// shorter run) until deadline.
func (s *soakRun) sampleUntil(deadline time.Time, pid int, addr string) []soakSample {
	tick := time.NewTicker(min(time.Until(deadline)/30, time.Second))
	defer tick.Stop()
	var out []soakSample
	for time.Now().Before(deadline) {
		<-tick.C
		out = append(out, soakScrape(s.t, pid, addr))
	}
	return out
}

// soakWaitReaders waits for the readers. Readers still busy long after the
// run ended are stuck: the daemon is sent SIGQUIT, which makes the Go
// runtime write every goroutine's stack to its log, and that is shown.
func soakWaitReaders(t *testing.T, readers *sync.WaitGroup, m *mounted) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		readers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(soakStuck):
	}
	t.Errorf("readers still busy %v after the run ended: the daemon is stuck", soakStuck)
	soakDumpDaemon(t, m)
	<-done // a dead daemon fails their reads with ENOTCONN
	t.FailNow()
}

// soakDumpDaemon sends the daemon SIGQUIT, which makes the Go runtime
// write every goroutine's stack to its log and exit, and shows that part
// of the log.
func soakDumpDaemon(t *testing.T, m *mounted) {
	t.Helper()
	if err := syscall.Kill(m.pid, syscall.SIGQUIT); err != nil {
		t.Errorf("SIGQUIT daemon %d: %v", m.pid, err)
	}
	if err := waitExit(m.pid, exitTimeout); err != nil {
		t.Error(err)
	}
	log := readLog(m.cache)
	if i := strings.Index(log, "SIGQUIT"); i >= 0 {
		log = log[i:]
	}
	t.Logf("the daemon's goroutines:\n%s", log)
}

// soakRSS returns the resident memory of process pid.
func soakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	return procStatusBytes(t, pid, "VmRSS")
}

// soakScrape samples the daemon: its RSS, and its goroutines and GC
// target from its /metrics. The connection is not kept alive, so the
// scrape leaves no goroutine of its own behind in the daemon.
func soakScrape(t *testing.T, pid int, addr string) soakSample {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %v %s", err, resp.Status)
	}
	return soakSample{
		rss:        soakRSS(t, pid),
		goroutines: int(sample(t, string(b), "go_goroutines")),
		nextGC:     int64(sample(t, string(b), "go_memstats_next_gc_bytes")),
	}
}

// soakMiB returns v of each sample in MiB, for the log.
func soakMiB(xs []soakSample, v func(soakSample) int64) []int64 {
	out := make([]int64, len(xs))
	for i, x := range xs {
		out[i] = v(x) >> 20
	}
	return out
}

// soakThirds returns the mean of v over the first and the last third of xs.
func soakThirds[T any](xs []T, v func(T) int64) (first, last int64) {
	n := int64(len(xs) / 3)
	if n == 0 {
		return 0, 0
	}
	for i := range n {
		first += v(xs[i])
		last += v(xs[int64(len(xs))-1-i])
	}
	return first / n, last / n
}
