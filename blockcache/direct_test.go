package blockcache

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"s3cachefs/index"
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

// TestFetchesWritePastPageCache: every fetch writes its whole blocks with
// O_DIRECT, a prefetch's (Warm) and a reader's alike, so none of them sits
// in the page cache afterwards; the reader was served from the fetch's
// buffers. A short last block goes through the page cache: the control
// that residency is measured at all. Everything reads back as the source
// has it.
func TestFetchesWritePastPageCache(t *testing.T) {
	f := newFixture(t, Options{ReadAhead: -1})
	skipOnTmpfs(t, f.dir)
	whole := int64(3 * testPart) // whole blocks; a short last block follows
	warmed := randBytes(41, int(whole)+5000)
	read := randBytes(42, int(whole))
	wObj, rObj := f.src.Put("warmed", warmed), f.src.Put("read", read)
	if err := f.c.Warm(context.Background(), wObj, nil); err != nil {
		t.Fatal(err)
	}
	h := f.openHandle(rObj)
	if got := readAll(t, h); !bytes.Equal(got, read) {
		t.Fatal("read differs from the source")
	}
	if f.c.noDirect.Load() {
		t.Skip("the cache filesystem refuses O_DIRECT: everything goes through the page cache")
	}
	if got, want := f.c.Stats().BlocksFresh, whole/testBlock; got != want {
		t.Errorf("%d blocks served fresh to the reader, want all %d", got, want)
	}
	for _, o := range []struct {
		name string
		obj  index.Object
	}{{"prefetched", wObj}, {"read", rObj}} {
		if n := residentPages(t, objectPath(f.dir, ObjectID("bucket", o.obj)), whole); n != 0 {
			t.Errorf("%d pages of %s whole blocks in the page cache, want 0", n, o.name)
		}
	}
	tail := residentPages(t, objectPath(f.dir, ObjectID("bucket", wObj)), whole+5000)
	if tail == 0 {
		t.Error("the short last block is not in the page cache either: residency is not measured")
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
		w := f.c.newWriter(o)
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

// TestReaderJoiningPrefetchServedFresh: a reader that has the object open
// while a prefetch fetches it takes the prefetch's blocks from memory, not
// read back from SSD nor checked again; no more blocks are kept at once
// than the bound, a block not kept goes through the page cache and is read
// back from there and checked, and the last close gives back every block
// still kept.
func TestReaderJoiningPrefetchServedFresh(t *testing.T) {
	f := newFixture(t, Options{ReadAhead: -1, MaxFetches: 4})
	skipOnTmpfs(t, f.dir)
	limit := f.c.freshLimit()
	data := randBytes(46, 2*testPart)
	obj := f.src.Put("joined", data)
	h := f.openHandle(obj)
	if err := f.c.Warm(context.Background(), obj, nil); err != nil {
		t.Fatal(err)
	}
	if n := f.c.freshBlocks.Load(); n != limit {
		t.Fatalf("%d blocks kept for the open handle, want the bound, %d", n, limit)
	}
	blocks := int64(2 * testPart / testBlock)
	if !f.c.noDirect.Load() {
		// Kept blocks went past the page cache, the others through it.
		pages := int64(testBlock / os.Getpagesize())
		path := objectPath(f.dir, ObjectID("bucket", obj))
		if n := int64(residentPages(t, path, 2*testPart)); n != (blocks-limit)*pages {
			t.Errorf("%d pages in the page cache, want the %d of the %d blocks not kept", n, (blocks-limit)*pages, blocks-limit)
		}
	}
	before := f.c.Stats()
	if got := readAll(t, h); !bytes.Equal(got, data) {
		t.Fatal("bytes read differ from the source")
	}
	after := f.c.Stats()
	if got := after.BlocksFresh - before.BlocksFresh; got != limit {
		t.Errorf("%d blocks served fresh, want %d", got, limit)
	}
	if got := after.BlocksChecked - before.BlocksChecked; got != blocks-limit {
		t.Errorf("%d blocks read back and checked, want the %d not kept", got, blocks-limit)
	}
	if after.BytesFromS3 != before.BytesFromS3 {
		t.Errorf("the reader fetched %d bytes again", after.BytesFromS3-before.BytesFromS3)
	}
	// Blocks kept for a handle that closes before reading them are given back.
	other := f.src.Put("other", randBytes(47, testPart))
	h2 := f.openHandle(other)
	if err := f.c.Warm(context.Background(), other, nil); err != nil {
		t.Fatal(err)
	}
	if n := f.c.freshBlocks.Load(); n != limit {
		t.Fatalf("%d blocks kept for the second handle, want %d", n, limit)
	}
	h.Close()
	h2.Close()
	if n := f.c.freshBlocks.Load(); n != 0 {
		t.Errorf("%d blocks still kept after the last close, want 0", n)
	}
}
