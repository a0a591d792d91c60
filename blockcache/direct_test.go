package blockcache

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// residentPages counts the pages of the first n bytes of path that are in
// the page cache.
func residentPages(t *testing.T, path string, n int64) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (n+int64(os.Getpagesize())-1)/int64(os.Getpagesize()))
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)),
		uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	resident := 0
	for _, v := range vec {
		resident += int(v & 1)
	}
	return resident
}

// skipOnTmpfs skips a test of page-cache residency where it proves nothing.
func skipOnTmpfs(t *testing.T, dir string) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		t.Skip("tmpfs keeps every page in memory: page-cache residency proves nothing there")
	}
}

// TestWarmWritesPastPageCache: a prefetch (Warm) writes its whole blocks
// with O_DIRECT, so none of them sits in the page cache afterwards, while
// the blocks a reader fetched do; both read back as the source has them.
func TestWarmWritesPastPageCache(t *testing.T) {
	f := newFixture(t, Options{ReadAhead: -1})
	skipOnTmpfs(t, f.dir)
	whole := int64(3 * testPart) // whole blocks; a short last block follows
	warmed := randBytes(41, int(whole)+5000)
	read := randBytes(42, int(whole))
	wObj, rObj := f.src.Put("warmed", warmed), f.src.Put("read", read)
	if err := f.c.Warm(context.Background(), wObj, nil); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, f.openHandle(rObj)); !bytes.Equal(got, read) {
		t.Fatal("read differs from the source")
	}
	if f.c.noDirect.Load() {
		t.Skip("the cache filesystem refuses O_DIRECT: everything goes through the page cache")
	}
	if n := residentPages(t, objectPath(f.dir, ObjectID("bucket", wObj)), whole); n != 0 {
		t.Errorf("%d pages of prefetched whole blocks in the page cache, want 0", n)
	}
	// The check can tell: blocks a reader waited for went through it.
	if n := residentPages(t, objectPath(f.dir, ObjectID("bucket", rObj)), whole); n == 0 {
		t.Error("no page of blocks fetched for a reader in the page cache: residency is not measured")
	}
	if got := readAll(t, f.openHandle(wObj)); !bytes.Equal(got, warmed) {
		t.Fatal("prefetched bytes read back differ from the source")
	}
}

// TestDirectWriterFallsBack: what O_DIRECT cannot take goes through the
// page cache: a short block, a buffer not aligned, a file it cannot open.
func TestDirectWriterFallsBack(t *testing.T) {
	f := newFixture(t, Options{})
	obj := f.src.Put("o", randBytes(43, 3*testBlock))
	h := f.openHandle(obj) // opens the object: its cache file exists
	defer h.Close()
	o := h.o
	aligned := alignedBlock(testBlock)
	copy(aligned, randBytes(44, testBlock))
	for _, c := range []struct {
		name string
		p    []byte
		off  int64
		path string
	}{
		{"short block", aligned[:testBlock-100], 0, fmt.Sprintf("/proc/self/fd/%d", o.file.Fd())},
		{"unaligned buffer", randBytes(45, testBlock+1)[1:], testBlock, fmt.Sprintf("/proc/self/fd/%d", o.file.Fd())},
		{"cannot open", aligned, 2 * testBlock, f.dir + "/no/such/file"},
	} {
		w := f.c.newWriter(o, func() bool { return true })
		w.path = c.path
		if n, err := w.WriteAt(c.p, c.off); err != nil || n != len(c.p) {
			t.Fatalf("%s: wrote %d bytes, %v", c.name, n, err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(c.p))
		if _, err := o.file.ReadAt(got, c.off); err != nil || !bytes.Equal(got, c.p) {
			t.Errorf("%s: bytes read back differ (%v)", c.name, err)
		}
	}
	if f.c.noDirect.Load() {
		t.Error("a failed open of one file turned O_DIRECT off for the cache")
	}
}

// TestPrefetchJoinedByReaderUsesPageCache: once a reader waits on a
// prefetch's fetch, the blocks still to come go through the page cache,
// from which that reader is served.
func TestPrefetchJoinedByReaderUsesPageCache(t *testing.T) {
	var f *fixture
	writes := 0
	join := func(point, id string) error {
		if point != "write" {
			return nil
		}
		if writes++; writes == 2 { // after the first block: a reader joins
			f.c.mu.Lock()
			o := f.c.objs[id]
			f.c.mu.Unlock()
			o.mu.Lock()
			for _, fe := range o.inflight {
				fe.makeUrgent()
			}
			o.mu.Unlock()
		}
		return nil
	}
	f = newFixture(t, Options{ReadAhead: -1, Fault: join})
	skipOnTmpfs(t, f.dir)
	data := randBytes(46, testPart)
	obj := f.src.Put("joined", data)
	if err := f.c.Warm(context.Background(), obj, nil); err != nil {
		t.Fatal(err)
	}
	if f.c.noDirect.Load() {
		t.Skip("the cache filesystem refuses O_DIRECT: everything goes through the page cache")
	}
	path := objectPath(f.dir, ObjectID("bucket", obj))
	pages := testBlock / os.Getpagesize()
	if n := residentPages(t, path, testBlock); n != 0 {
		t.Errorf("first block, written before the reader came: %d of %d pages in the page cache, want 0", n, pages)
	}
	if n := residentPages(t, path, testPart); n < 3*pages {
		t.Errorf("%d pages of the part in the page cache, want the %d of the blocks written after the reader came", n, 3*pages)
	}
	if got := readAll(t, f.openHandle(obj)); !bytes.Equal(got, data) {
		t.Fatal("bytes read back differ from the source")
	}
}
