package blockcache

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"

	"s3cachefs/index"
)

func TestBackingOnlyForCompleteCheckedFiles(t *testing.T) {
	f := newFixture(t, Options{ReadAhead: -1})
	data := randBytes(70, 2*testPart)
	obj := f.src.Put("b", data)
	h := f.openHandle(obj)
	if _, err := h.ReadAt(context.Background(), buf(10), 0); err != nil {
		t.Fatal(err)
	}
	if b := h.Backing(); b != nil {
		b.Close()
		t.Fatal("Backing of a partial file: want nil (its holes would read as zeros)")
	}
	readAll(t, h)
	b := h.Backing()
	if b == nil {
		t.Fatal("Backing of a complete file: nil")
	}
	h.Close()
	f.close()
	// The descriptor is the caller's: it outlives the handle and the cache.
	got, err := io.ReadAll(io.NewSectionReader(b, 0, int64(len(data))))
	b.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reading the backing file after Close: %v, equal %v", err, bytes.Equal(got, data))
	}
}

func TestBackingChecksBlocksFirst(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(71, 2*testPart)
	obj := f.cached("d", data)
	f.close() // a new run: nothing is checked yet
	f.open(Options{})
	path := objectPath(f.dir, ObjectID("bucket", obj))
	file, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := file.WriteAt([]byte("rot"), testPart+7); err != nil {
		t.Fatal(err)
	}
	file.Close()
	h := f.openHandle(obj)
	defer h.Close()
	if b := h.Backing(); b != nil {
		b.Close()
		t.Fatal("Backing of a file with a damaged block: want nil")
	}
	if h.Complete() {
		t.Fatal("the damaged block is still recorded as present")
	}
	if got := readAll(t, h); !bytes.Equal(got, data) {
		t.Fatal("bytes after the damaged block was fetched again differ")
	}
	b := h.Backing()
	if b == nil {
		t.Fatal("Backing after the refetch: nil")
	}
	b.Close()
	if s := f.c.Stats(); s.Corrupt != 1 {
		t.Fatalf("corrupt blocks counted: %d, want 1", s.Corrupt)
	}
}

// TestCheckedIsBounded: the cache remembers checked blocks of at most
// maxChecked closed objects; one it let go of is checked again when
// reopened, so damage done meanwhile is found, not served.
func TestCheckedIsBounded(t *testing.T) {
	f := newFixture(t, Options{ReadAhead: -1})
	f.c.maxChecked = 2
	data := map[string][]byte{}
	objs := map[string]index.Object{}
	for i, key := range []string{"a", "b", "c"} {
		data[key] = randBytes(uint64(80+i), testPart)
		objs[key] = f.cached(key, data[key])
	}
	f.c.mu.Lock()
	n := len(f.c.checked)
	var forgotten string
	for key, obj := range objs {
		if _, ok := f.c.checked[ObjectID("bucket", obj)]; !ok {
			forgotten = key
		}
	}
	f.c.mu.Unlock()
	if n != 2 || forgotten == "" {
		t.Fatalf("%d objects remembered as checked (forgotten %q), want 2 and one forgotten", n, forgotten)
	}
	file, err := os.OpenFile(objectPath(f.dir, ObjectID("bucket", objs[forgotten])), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := file.WriteAt([]byte("rot"), 5); err != nil {
		t.Fatal(err)
	}
	file.Close()
	h := f.openHandle(objs[forgotten])
	defer h.Close()
	if got := readAll(t, h); !bytes.Equal(got, data[forgotten]) {
		t.Fatal("bytes of a damaged object no longer remembered as checked differ from the source")
	}
	if s := f.c.Stats(); s.Corrupt != 1 {
		t.Fatalf("corrupt blocks counted: %d, want 1", s.Corrupt)
	}
}
