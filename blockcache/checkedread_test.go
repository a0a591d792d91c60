package blockcache

import (
	"bytes"
	"context"
	"os"
	"testing"

	"s3cachefs/index"
)

// damage writes over bytes of obj's cache file at off, as a stray script
// or a bad copy would, while the cache runs.
func (f *fixture) damage(obj index.Object, off int64) {
	f.t.Helper()
	file, err := os.OpenFile(objectPath(f.dir, ObjectID("bucket", obj)), os.O_WRONLY, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	defer file.Close()
	if _, err := file.WriteAt([]byte("changed after the check"), off); err != nil {
		f.t.Fatal(err)
	}
}

// TestChangeAfterCheckIsCaughtOnRead: a block read (and so checked) once
// is checked again on every later read, so bytes changed on SSD after the
// check never reach a reader, in the same run and through the same open.
func TestChangeAfterCheckIsCaughtOnRead(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(81, 3*testPart)
	obj := f.cached("k", data)
	h := f.openHandle(obj)
	if got := readAll(t, h); !bytes.Equal(got, data) {
		t.Fatal("first read differs")
	}
	f.damage(obj, 2*testBlock+5)
	gets := f.src.Stats().Gets
	if got := readAll(t, h); !bytes.Equal(got, data) {
		t.Fatal("bytes changed on SSD after their check were served through an open handle")
	}
	if got := readAll(t, f.openHandle(obj)); !bytes.Equal(got, data) {
		t.Fatal("bytes changed on SSD after their check were served through a new open")
	}
	if s := f.c.Stats(); s.Corrupt != 1 || f.src.Stats().Gets == gets {
		t.Fatalf("damage found %d times, %d GETs after it; want 1 and a refetch", s.Corrupt, f.src.Stats().Gets-gets)
	}
}

// TestBackingNoticesChangeAfterCheck: once a complete file was handed out
// checked, a change of the cache file makes the next Backing check every
// block again rather than hand out the changed file.
func TestBackingNoticesChangeAfterCheck(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(82, 2*testPart)
	obj := f.cached("k", data)
	h := f.openHandle(obj)
	b := h.Backing()
	if b == nil {
		t.Fatal("Backing of a complete, checked file: nil")
	}
	b.Close()
	h.Close()
	f.damage(obj, testPart+9)
	h = f.openHandle(obj)
	if b := h.Backing(); b != nil {
		b.Close()
		t.Fatal("Backing handed out a cache file changed after its check")
	}
	if got := readAll(t, h); !bytes.Equal(got, data) {
		t.Fatal("bytes after the refetch differ")
	}
	b = h.Backing()
	if b == nil {
		t.Fatal("Backing after the refetch: nil")
	}
	defer b.Close()
	got := make([]byte, len(data))
	if _, err := b.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the file Backing handed out after the refetch differs from S3 (err %v)", err)
	}
}

// TestSequentialReadsCheckEachBlockOnce: reads that straddle blocks (as the
// kernel's do) read and check each block once, not once per read.
func TestSequentialReadsCheckEachBlockOnce(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(83, 3*testPart)
	obj := f.cached("k", data)
	h := f.openHandle(obj)
	before := f.c.Stats().BlocksChecked
	var got []byte
	p := make([]byte, testBlock-4096)
	for off := int64(0); off < int64(len(data)); {
		n, err := h.ReadAt(context.Background(), p, off)
		if err != nil || n == 0 {
			t.Fatalf("read at %d: n=%d err=%v", off, n, err)
		}
		got = append(got, p[:n]...)
		off += int64(n)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("bytes differ")
	}
	if n := f.c.Stats().BlocksChecked - before; n != int64(len(data)/testBlock) {
		t.Fatalf("%d block checks for a sequential read of %d blocks, want one each", n, len(data)/testBlock)
	}
}

// TestHeldBlocksAreBounded: open handles together hold at most twice
// MaxFetches blocks between reads; past that a handle reads on without
// holding one, and its bytes are still right.
func TestHeldBlocksAreBounded(t *testing.T) {
	f := newFixture(t, Options{MaxFetches: 2})
	data := randBytes(84, 2*testPart)
	obj := f.cached("k", data)
	var hs []*Handle
	for range 6 {
		h := f.openHandle(obj)
		hs = append(hs, h)
		p := make([]byte, 100)
		if n, err := h.ReadAt(context.Background(), p, 10); err != nil || !bytes.Equal(p[:n], data[10:110]) {
			t.Fatalf("read: n=%d err=%v", n, err)
		}
	}
	if n := f.c.heldBlocks.Load(); n != 4 {
		t.Fatalf("%d blocks held by 6 handles that each stopped inside a block, want 4 (2 x MaxFetches)", n)
	}
	for _, h := range hs {
		h.Close()
	}
	if n := f.c.heldBlocks.Load(); n != 0 {
		t.Fatalf("%d blocks still held after every handle closed", n)
	}
}
