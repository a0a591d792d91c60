package test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"s3cachefs/test/s3server"
)

// The tests here break S3's answers at the proxy every daemon talks to
// (test/s3server/faults.go) while many readers and a prefetch run, and
// check the promise: every byte read equals S3's; a read fails (EIO) only
// when a fault outlasts the retries, and only for that file; nobody hangs;
// an object replaced mid-read gives the old bytes or ESTALE/EIO, never a
// mix. TestFaults logs one grep-able RELIABILITY line with the totals.

const (
	faultReaders = 16
	// faultReadLimit bounds one read(2) under faults: a stall is cut
	// after --s3-timeout (1s) and retried, so no read comes near it.
	faultReadLimit = 20 * time.Second
	// faultRunLimit bounds a whole run of readers.
	faultRunLimit = 90 * time.Second
)

// faultFlags mount with a short S3 timeout (stalls cut after 1s) and
// 2 MiB parts: many GETs to break, each of two blocks, so that a body
// broken in its middle still brings a block.
var faultFlags = []string{"--s3-timeout", "1s", "--part-size", "2MiB", "--max-fetches", "16"}

// faultTally counts what the runs checked, for the RELIABILITY line.
type faultTally struct {
	faults, checked, wrong atomic.Int64
}

func TestFaults(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	var tally faultTally
	for _, c := range []struct {
		name   string
		faults s3server.Faults
	}{
		{"5xx and SlowDown", s3server.Faults{Seed: 1, InternalError: 0.1, Unavailable: 0.1, SlowDown: 0.1}},
		{"resets", s3server.Faults{Seed: 2, Reset: 0.25}},
		{"truncated bodies", s3server.Faults{Seed: 3, Truncate: 0.25}},
		{"stalls", s3server.Faults{Seed: 4, Stall: 0.15, StallFor: 5 * time.Second}},
		{"all at once", s3server.Faults{Seed: 5, InternalError: 0.05, Unavailable: 0.05, SlowDown: 0.05,
			Reset: 0.1, Truncate: 0.1, Stall: 0.05, StallFor: 5 * time.Second}},
	} {
		t.Run(c.name, func(t *testing.T) { faultTransient(t, e, files, c.faults, &tally) })
	}
	t.Run("fault outlasting the retries", func(t *testing.T) { faultOutlasting(t, e, files, &tally) })
	t.Run("object replaced mid-read", func(t *testing.T) { faultReplaced(t, e, files, &tally) })
	t.Logf("RELIABILITY faults=%d bytes_checked=%d wrong=%d",
		tally.faults.Load(), tally.checked.Load(), tally.wrong.Load())
	if tally.wrong.Load() != 0 {
		t.Errorf("%d reads returned bytes that differ from S3's", tally.wrong.Load())
	}
}

// faultTransient mounts afresh, injects f, and has faultReaders readers
// read train/ while a prefetch fetches dev/: every read must succeed with
// S3's bytes, and the prefetch must finish.
func faultTransient(t *testing.T, e *env, files map[string][]byte, f s3server.Faults, tally *faultTally) {
	m := e.mount(t, faultFlags...)
	before := e.proxy.Faults().Total()
	e.proxy.SetFaults(f)
	defer e.proxy.SetFaults(s3server.Faults{})
	job := e.startJob(t, m, "dev").ID
	names := faultNames(files, "train/")
	errs := faultReadAll(t, m.dir, names, files, tally)
	for _, err := range errs {
		t.Errorf("read under transient faults: %v", err)
	}
	if st := faultWaitJob(t, e, m, job); st != "done" {
		t.Errorf("prefetch under faults ended %s, want done", st)
	}
	n := e.proxy.Faults().Total() - before
	tally.faults.Add(n)
	if n == 0 {
		t.Fatal("no fault was injected: the test proved nothing")
	}
	e.proxy.SetFaults(s3server.Faults{})
	// What the prefetch cached reads back as S3 has it.
	if errs := faultReadAll(t, m.dir, faultNames(files, "dev/"), files, tally); len(errs) > 0 {
		t.Errorf("read of prefetched files: %v", errs[0])
	}
	t.Logf("%d faults injected", n)
	e.waitNoOpenFiles(t, m)
	e.drop(t, m)
}

// faultOutlasting breaks one file for good (every GET a 500, with 2
// attempts a request; then, on a fresh mount, every body truncated): reads
// of that file fail with EIO, readers of the others go on unharmed, and
// once the fault stops the file reads again.
func faultOutlasting(t *testing.T, e *env, files map[string][]byte, tally *faultTally) {
	train := faultNames(files, "train/")
	for i, f := range []s3server.Faults{{InternalError: 1}, {Truncate: 1}} {
		m := e.mount(t, append(faultFlags, "--s3-max-attempts", "2")...)
		bad := train[i]
		others := append(append([]string{}, train[:i]...), train[i+1:]...)
		f.Keys = bad
		before := e.proxy.Faults().Total()
		e.proxy.SetFaults(f)
		job := e.startJob(t, m, "dev").ID
		var wg sync.WaitGroup
		var otherErrs []error
		wg.Go(func() { otherErrs = faultReadAll(t, m.dir, others, files, tally) })
		_, err := os.ReadFile(filepath.Join(m.dir, bad))
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("read of %s while every GET of it fails (%+v): %v, want EIO", bad, f, err)
		}
		wg.Wait()
		for _, err := range otherErrs {
			t.Errorf("read of another file while %s fails: %v", bad, err)
		}
		if st := faultWaitJob(t, e, m, job); st != "done" {
			t.Errorf("prefetch of dev/ while %s fails ended %s, want done", bad, st)
		}
		tally.faults.Add(e.proxy.Faults().Total() - before)
		e.proxy.SetFaults(s3server.Faults{})
		if errs := faultReadAll(t, m.dir, []string{bad}, files, tally); len(errs) > 0 {
			t.Errorf("read of %s after the fault stopped: %v", bad, errs[0])
		}
		e.waitNoOpenFiles(t, m)
		e.drop(t, m)
	}
}

// faultReplaced replaces a file in S3 while its first GET is half sent:
// the reader gets the old bytes or ESTALE/EIO, never the new ones mixed in,
// and an open after the listing expired sees the new version.
func faultReplaced(t *testing.T, e *env, files map[string][]byte, tally *faultTally) {
	m := e.mount(t, append(faultFlags, "--metadata-ttl", "1s", "--part-size", "1MiB",
		"--read-ahead", "0", "--kernel-read-ahead", "0")...)
	name := faultLargest(files, "train/")
	old := files[name]
	// Same size, every byte different: only the ETag tells them apart.
	newData := make([]byte, len(old))
	for i, b := range old {
		newData[i] = ^b
	}
	done := e.proxy.ReplaceMidRead(bucket, prefix+"/"+name, newData)
	f, err := os.Open(filepath.Join(m.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	var off int
	buf := make([]byte, 256<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if !bytes.Equal(buf[:n], old[off:off+n]) {
				tally.wrong.Add(1)
				t.Errorf("read of %d bytes at %d during the replacement differs from the old version (new version: %v)",
					n, off, bytes.Equal(buf[:n], newData[off:off+n]))
			}
			tally.checked.Add(int64(n))
			off += n
		}
		if err == io.EOF {
			t.Logf("the reader got the old version whole (%d bytes)", off)
			break
		}
		if err != nil {
			if !errors.Is(err, syscall.ESTALE) && !errors.Is(err, syscall.EIO) {
				t.Errorf("read at %d after the replacement: %v, want ESTALE or EIO", off, err)
			}
			t.Logf("the reader got %d old bytes, then %v", off, err)
			break
		}
	}
	f.Close()
	if err := <-done; err != nil {
		t.Fatalf("the proxy's upload of the new version: %v", err)
	}
	tally.faults.Add(1)
	waitFor(t, 30*time.Second, "the new version of "+name, func() bool {
		got, err := os.ReadFile(filepath.Join(m.dir, name))
		if err != nil {
			return false // ESTALE/EIO until the listing expires
		}
		tally.checked.Add(int64(len(got)))
		if !bytes.Equal(got, newData) && !bytes.Equal(got, old) {
			tally.wrong.Add(1)
			t.Fatalf("read of %s returned bytes of neither version", name)
		}
		return bytes.Equal(got, newData)
	})
	e.waitNoOpenFiles(t, m)
	e.drop(t, m)
}

// faultReadAll has faultReaders readers go through names at once, half
// reading files whole, half at random ranges, each in its own order, and
// checks every byte against files. It returns the read errors, and fails
// t if a read takes longer than faultReadLimit or the run faultRunLimit.
func faultReadAll(t *testing.T, dir string, names []string, files map[string][]byte, tally *faultTally) []error {
	t.Helper()
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	}
	for r := range faultReaders {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 6))
			for _, i := range rng.Perm(len(names)) {
				name := names[i]
				var err error
				if r%2 == 0 {
					err = faultReadWhole(filepath.Join(dir, name), files[name], tally)
				} else {
					err = faultReadRanges(filepath.Join(dir, name), files[name], rng, tally)
				}
				if err != nil {
					fail(fmt.Errorf("%s: %w", name, err))
				}
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(faultRunLimit):
		t.Fatalf("%d readers not done after %v: a reader hangs", faultReaders, faultRunLimit)
	}
	return errs
}

// faultReadWhole reads path from start to end in 1 MiB reads.
func faultReadWhole(path string, want []byte, tally *faultTally) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	off := 0
	for {
		start := time.Now()
		n, err := f.Read(buf)
		if d := time.Since(start); d > faultReadLimit {
			return fmt.Errorf("one read at %d took %v", off, d)
		}
		if n > 0 {
			if err := faultCheck(buf[:n], want, off, tally); err != nil {
				return err
			}
			off += n
		}
		if err == io.EOF {
			if off != len(want) {
				return fmt.Errorf("EOF after %d of %d bytes", off, len(want))
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// faultReadRanges reads path at 8 random offsets and lengths, first its
// last 64 KiB as a ZIP reader does.
func faultReadRanges(path string, want []byte, rng *rand.Rand, tally *faultTally) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	size := len(want)
	off, n := max(size-64<<10, 0), min(64<<10, size)
	for i := range 8 {
		if i > 0 {
			off = rng.IntN(size)
			n = 1 + rng.IntN(min(3<<20, size-off))
		}
		buf := make([]byte, n)
		start := time.Now()
		got, err := f.ReadAt(buf, int64(off))
		if d := time.Since(start); d > faultReadLimit {
			return fmt.Errorf("ReadAt(%d, %d) took %v", n, off, d)
		}
		if err != nil && !(errors.Is(err, io.EOF) && off+got == size) {
			return fmt.Errorf("ReadAt(%d, %d): %w", n, off, err)
		}
		if err := faultCheck(buf[:got], want, off, tally); err != nil {
			return err
		}
	}
	return nil
}

// faultCheck compares got with want at off and counts it.
func faultCheck(got, want []byte, off int, tally *faultTally) error {
	tally.checked.Add(int64(len(got)))
	if off+len(got) > len(want) || !bytes.Equal(got, want[off:off+len(got)]) {
		tally.wrong.Add(1)
		return fmt.Errorf("%d bytes at %d differ from S3's", len(got), off)
	}
	return nil
}

// faultWaitJob waits until job is no longer queued or running, and
// returns the state it ended in.
func faultWaitJob(t *testing.T, e *env, m *mounted, id string) string {
	t.Helper()
	var state string
	waitFor(t, faultRunLimit, "prefetch job "+id+" to end", func() bool {
		state = e.jobState(t, m, id)
		return state != "" && state != "running" && state != "queued"
	})
	return state
}

// faultNames returns the .npz files under split ("train/"), in order.
func faultNames(files map[string][]byte, split string) []string {
	var out []string
	for _, name := range sortedNames(files) {
		if strings.HasPrefix(name, split) && strings.HasSuffix(name, ".npz") {
			out = append(out, name)
		}
	}
	return out
}

// faultLargest returns the largest .npz file under split.
func faultLargest(files map[string][]byte, split string) string {
	var best string
	for _, name := range faultNames(files, split) {
		if best == "" || len(files[name]) > len(files[best]) {
			best = name
		}
	}
	return best
}
