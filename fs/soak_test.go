package fs

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// soakFor is how long TestSoakMountLeaks reads; longer locally:
// go test -race -run TestSoakMountLeaks ./fs -soak 2m
var soakFor = flag.Duration("soak", 2*time.Second, "how long TestSoakMountLeaks runs its readers (e.g. 2m locally)")

// TestSoakMountLeaks runs 64 readers over the fixture's files through a
// real mount for -soak, checking every byte, then checks that every open
// reached its Close, that the tree counts no open file, and that unmounting
// leaves no goroutine behind (go-fuse's server loops included).
func TestSoakMountLeaks(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	// Registered first, so it runs after the unmount mountFixture arranges.
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })

	fx := newFixture(testSizes)
	mnt, root := mountFixture(t, fx, time.Second)
	names := slices.Sorted(func(yield func(string) bool) {
		for p := range fx.data {
			if !yield(p) {
				return
			}
		}
	})
	var opens, reads, checked, failures atomic.Int64
	errorf := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	deadline := time.Now().Add(*soakFor)
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 64))
			buf := make([]byte, 512<<10)
			for time.Now().Before(deadline) {
				name := names[r.IntN(len(names))]
				want := fx.data[name]
				f, err := os.Open(filepath.Join(mnt, name))
				if err != nil {
					errorf("open %s: %v", name, err)
					return
				}
				opens.Add(1)
				// Reads reach the node, not the page cache of an earlier open.
				_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
				for range 1 + r.IntN(8) {
					size := int64(len(want))
					off, n := r.Int64N(size+1), 1+r.IntN(len(buf))
					got, err := f.ReadAt(buf[:n], off)
					reads.Add(1)
					part := want[off:min(off+int64(n), size)]
					if got != len(part) || !bytes.Equal(buf[:got], part) {
						errorf("read %s %d bytes at %d: %d bytes (err %v), want %d matching", name, n, off, got, err, len(part))
					}
					checked.Add(int64(got))
				}
				f.Close()
			}
		})
	}
	wg.Wait()
	// The kernel sends RELEASE after close(2) returns: wait for them all.
	fx.files.waitCloses(t, int(opens.Load()))
	if n := root.OpenFiles(); n != 0 {
		t.Errorf("the tree counts %d open files after every file was closed", n)
	}
	o, _, c := fx.files.counts()
	t.Logf("RELIABILITY soak-fs readers=64 seconds=%.0f opens=%d reads=%d bytes_checked=%d failures=%d files_opened=%d files_closed=%d",
		soakFor.Seconds(), opens.Load(), reads.Load(), checked.Load(), failures.Load(), o, c)
	if o != c {
		t.Errorf("%d handles opened, %d closed", o, c)
	}
}
