package storetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"sync"
	"testing"

	"s3cachefs/index"
)

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// readAll reads [off, off+n) of key and fails the test on any error.
func readAll(t testing.TB, s Store, key, etag string, off, n int64) []byte {
	t.Helper()
	rc, err := s.GetRange(context.Background(), key, etag, off, n)
	if err != nil {
		t.Fatalf("GetRange(%q, %q, %d, %d): %v", key, etag, off, n, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read GetRange(%q, %d, %d): %v", key, off, n, err)
	}
	return b
}

// putListed puts data under key and returns the object as listed.
func putListed(t *testing.T, f Fixture, key string, data []byte) index.Object {
	t.Helper()
	f.Put(t, key, data)
	dir := ""
	if i := bytes.LastIndexByte([]byte(key), '/'); i >= 0 {
		dir = key[:i+1]
	}
	for _, o := range mustList(t, f.Store, dir).Objects {
		if o.Key == key {
			return o
		}
	}
	t.Fatalf("%s not listed after Put", key)
	return index.Object{}
}

func testRangeReads(t *testing.T, f Fixture) {
	const size = 3<<20 + 12345
	data := randomBytes(size, 1)
	o := putListed(t, f, "dir/blob.bin", data)
	for _, r := range []struct {
		name   string
		off, n int64
	}{
		{"start", 0, 4096},
		{"first byte", 0, 1},
		{"middle", 1<<20 + 7, 1 << 20},
		{"end", size - 1000, 1000},
		{"last byte", size - 1, 1},
		{"whole", 0, size},
		{"empty", 100, 0},
	} {
		got := readAll(t, f.Store, o.Key, o.ETag, r.off, r.n)
		if want := data[r.off : r.off+r.n]; !bytes.Equal(got, want) {
			t.Errorf("%s [%d,+%d): got %d bytes that differ from the %d stored", r.name, r.off, r.n, len(got), len(want))
		}
	}
}

func testRangeUnpinned(t *testing.T, f Fixture) {
	data := randomBytes(5000, 2)
	f.Put(t, "k", data)
	if got := readAll(t, f.Store, "k", "", 1000, 2000); !bytes.Equal(got, data[1000:3000]) {
		t.Errorf("unpinned read: wrong bytes")
	}
}

func testReaderStopsAtRange(t *testing.T, f Fixture) {
	data := randomBytes(10000, 3)
	o := putListed(t, f, "k", data)
	rc, err := f.Store.GetRange(context.Background(), o.Key, o.ETag, 10, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, 1000)
	got, err := io.ReadAtLeast(rc, buf, 100)
	if err != nil || got != 100 {
		t.Fatalf("ReadAtLeast = %d, %v; want 100, nil", got, err)
	}
	if !bytes.Equal(buf[:100], data[10:110]) {
		t.Error("wrong bytes")
	}
	if n, err := rc.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("Read after the range = %d, %v; want 0, io.EOF", n, err)
	}
}

func testStaleETag(t *testing.T, f Fixture) {
	old := putListed(t, f, "v", []byte("version one"))
	cur := putListed(t, f, "v", []byte("version two, longer"))
	if old.ETag == cur.ETag {
		t.Fatalf("ETag did not change on replace: %q", cur.ETag)
	}
	_, err := f.Store.GetRange(context.Background(), "v", old.ETag, 0, 5)
	if !errors.Is(err, index.ErrStale) {
		t.Errorf("GetRange with the old ETag: err = %v, want index.ErrStale", err)
	}
	if got := readAll(t, f.Store, "v", cur.ETag, 0, cur.Size); string(got) != "version two, longer" {
		t.Errorf("GetRange with the new ETag = %q", got)
	}
}

func testStaleShorter(t *testing.T, f Fixture) {
	old := putListed(t, f, "s", randomBytes(1000, 4))
	f.Put(t, "s", randomBytes(500, 5))
	// Unpinned, the shrunken object still cannot serve the old range:
	// partly (fewer bytes than asked) or not at all.
	for _, off := range []int64{0, 600} {
		_, err := f.Store.GetRange(context.Background(), "s", "", off, old.Size-off)
		if !errors.Is(err, index.ErrStale) {
			t.Errorf("GetRange(off %d) past the new end: err = %v, want index.ErrStale", off, err)
		}
	}
}

func testMissingKey(t *testing.T, f Fixture) {
	o := putListed(t, f, "gone", []byte("soon gone"))
	f.Delete(t, "gone")
	for _, etag := range []string{o.ETag, ""} {
		_, err := f.Store.GetRange(context.Background(), "gone", etag, 0, 4)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("GetRange(etag %q) of a deleted key: err = %v, want fs.ErrNotExist", etag, err)
		}
	}
	_, err := f.Store.GetRange(context.Background(), "never/was", "", 0, 4)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GetRange of a missing key: err = %v, want fs.ErrNotExist", err)
	}
}

func testTruncated(t *testing.T, f Fixture) {
	if f.Truncate == nil {
		t.Skip("the harness cannot cut a body short")
	}
	data := randomBytes(100000, 6)
	o := putListed(t, f, "t", data)
	f.Truncate(t, "t")
	rc, err := f.Store.GetRange(context.Background(), o.Key, o.ETag, 0, o.Size)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reading a cut body: err = %v, want io.ErrUnexpectedEOF", err)
	}
	if len(got) >= len(data) || !bytes.Equal(got, data[:len(got)]) {
		t.Errorf("read %d bytes of %d before the error; they must be a true prefix", len(got), len(data))
	}
}

func testCanceled(t *testing.T, f Fixture) {
	o := putListed(t, f, "c", []byte("cancel me"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Store.GetRange(ctx, o.Key, o.ETag, 0, o.Size); !errors.Is(err, context.Canceled) {
		t.Errorf("GetRange with a canceled context: err = %v, want context.Canceled", err)
	}
	if _, err := f.Store.List(ctx, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("List with a canceled context: err = %v, want context.Canceled", err)
	}
}

func testConcurrent(t *testing.T, f Fixture) {
	const size = 1 << 20
	data := randomBytes(size, 7)
	o := putListed(t, f, "dir/c.bin", data)
	const workers, chunk = 16, size / 16
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers)
	for i := range workers {
		wg.Go(func() {
			off := int64(i * chunk)
			rc, err := f.Store.GetRange(context.Background(), o.Key, o.ETag, off, chunk)
			if err != nil {
				errs <- err
				return
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err == nil && !bytes.Equal(got, data[off:off+chunk]) {
				err = errors.New("wrong bytes")
			}
			if err != nil {
				errs <- err
			}
		})
		wg.Go(func() {
			if _, err := f.Store.List(context.Background(), "dir/"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
