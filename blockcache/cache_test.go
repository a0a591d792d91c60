package blockcache

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"s3cachefs/blockcache/s3store/memstore"
	"s3cachefs/index"
)

// Small sizes keep the tests fast while exercising parts of several blocks.
const (
	testBlock = 64 << 10
	testPart  = 4 * testBlock
)

type fixture struct {
	t   *testing.T
	dir string
	db  *index.DB
	src *memstore.Store
	c   *Cache
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), src: memstore.New()}
	f.open(opts)
	return f
}

// open (re)opens the index and the cache on the fixture's directory, as a
// daemon restart does.
func (f *fixture) open(opts Options) {
	f.t.Helper()
	db, err := index.Open(filepath.Join(f.dir, "index.db"), index.Options{})
	if err != nil {
		f.t.Fatal(err)
	}
	opts.Dir, opts.Bucket = f.dir, "bucket"
	if opts.BlockSize == 0 {
		opts.BlockSize, opts.PartSize = testBlock, testPart
	}
	c, err := New(db, f.src, opts)
	if err != nil {
		f.t.Fatal(err)
	}
	f.db, f.c = db, c
	f.t.Cleanup(f.close)
}

func (f *fixture) close() {
	if f.c == nil {
		return
	}
	if err := f.c.Close(); err != nil {
		f.t.Error(err)
	}
	if err := f.db.Close(); err != nil {
		f.t.Error(err)
	}
	f.c, f.db = nil, nil
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// readAll reads h sequentially in kernel-sized requests.
func readAll(t *testing.T, h *Handle) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 128<<10)
	for off := int64(0); ; {
		n, err := h.ReadAt(context.Background(), buf, off)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if n == 0 {
			return out
		}
		out = append(out, buf[:n]...)
		off += int64(n)
	}
}

// cached puts key in the source and reads it whole through the cache, so
// that every block of it is on SSD; the handle is closed again.
func (f *fixture) cached(key string, data []byte) index.Object {
	f.t.Helper()
	obj := f.src.Put(key, data)
	h := f.openHandle(obj)
	readAll(f.t, h)
	h.Close()
	return obj
}

func (f *fixture) openHandle(obj index.Object) *Handle {
	f.t.Helper()
	h, err := f.c.Open(context.Background(), obj)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { h.Close() })
	return h
}

func TestReadThroughThenFromSSD(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(1, 3*testPart+12345) // last block partial
	obj := f.src.Put("a/x.npz", data)

	h := f.openHandle(obj)
	if got := readAll(t, h); !bytes.Equal(got, data) {
		t.Fatal("first read differs from the source")
	}
	if !h.Complete() {
		t.Fatal("not complete after a full read")
	}
	gets := f.src.Stats().Gets
	if want := int64(4); gets > want {
		t.Fatalf("%d GETs for 4 parts", gets)
	}
	if s := f.c.Stats(); s.BytesFromS3 != int64(len(data)) {
		t.Fatalf("BytesFromS3 = %d, want %d", s.BytesFromS3, len(data))
	}
	before := f.c.Stats()
	if got := readAll(t, f.openHandle(obj)); !bytes.Equal(got, data) {
		t.Fatal("second read differs")
	}
	if f.src.Stats().Gets != gets {
		t.Fatal("second read fetched again")
	}
	if s := f.c.Stats(); s.Misses != before.Misses || s.BytesFromSSD-before.BytesFromSSD != int64(len(data)) {
		t.Fatalf("stats after a warm read: %+v (before %+v)", s, before)
	}

	// A restart serves everything from SSD with zero GETs.
	f.close()
	f.open(Options{})
	if got := readAll(t, f.openHandle(obj)); !bytes.Equal(got, data) {
		t.Fatal("read after restart differs")
	}
	if f.src.Stats().Gets != gets {
		t.Fatal("read after restart fetched again")
	}
}

func TestRandomRangesFetchOnlyTheirParts(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(2, 10*testPart+500) // the tail lies in one part
	obj := f.src.Put("big", data)
	h := f.openHandle(obj)

	// The end first, as numpy reads an NPZ.
	tail := make([]byte, 100)
	n, err := h.ReadAt(context.Background(), tail, int64(len(data)-100))
	if err != nil || n != 100 || !bytes.Equal(tail, data[len(data)-100:]) {
		t.Fatalf("tail read: n=%d err=%v", n, err)
	}
	if g := f.src.Stats().Gets; g != 1 {
		t.Fatalf("tail read made %d GETs, want 1", g)
	}
	if s := f.c.Stats(); s.BytesFromS3 > testPart {
		t.Fatalf("tail read fetched %d bytes, more than one part", s.BytesFromS3)
	}
	r := rand.New(rand.NewPCG(3, 3))
	for range 200 {
		off := r.Int64N(int64(len(data)))
		buf := make([]byte, 1+r.IntN(3*testBlock))
		n, err := h.ReadAt(context.Background(), buf, off)
		if err != nil {
			t.Fatal(err)
		}
		want := data[off:min(off+int64(len(buf)), int64(len(data)))]
		if n != len(want) || !bytes.Equal(buf[:n], want) {
			t.Fatalf("read %d bytes at %d: wrong bytes", len(buf), off)
		}
	}
	// Past the end.
	if n, err := h.ReadAt(context.Background(), buf(10), int64(len(data))); n != 0 || err != nil {
		t.Fatalf("read past end: %d, %v", n, err)
	}
}

func buf(n int) []byte { return make([]byte, n) }

func TestEmptyObject(t *testing.T) {
	f := newFixture(t, Options{})
	obj := f.src.Put("empty", nil)
	if got := readAll(t, f.openHandle(obj)); len(got) != 0 {
		t.Fatalf("read %d bytes of an empty object", len(got))
	}
	if f.src.Stats().Gets != 0 {
		t.Fatal("empty object fetched")
	}
}

// heldGets blocks GETs until released, so tests can hold a fetch in flight.
type heldGets struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func holdGets(src *memstore.Store) *heldGets {
	g := &heldGets{entered: make(chan struct{}), release: make(chan struct{})}
	src.SetFault(func(op, key string) error {
		if op == memstore.OpGet {
			g.once.Do(func() { close(g.entered) })
			<-g.release
		}
		return nil
	})
	return g
}

func TestConcurrentReadersShareOneFetch(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(4, testPart)
	obj := f.src.Put("shared", data)
	g := holdGets(f.src)

	// The first reader gives up while the fetch is held; the fetch must go
	// on for the others.
	quitter := f.openHandle(obj)
	ctx, cancel := context.WithCancel(context.Background())
	quitErr := make(chan error)
	go func() {
		_, err := quitter.ReadAt(ctx, buf(10), 0)
		quitErr <- err
	}()
	<-g.entered
	cancel()
	if err := <-quitErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled reader got %v", err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := f.c.Open(context.Background(), obj)
			if err != nil {
				errs <- err
				return
			}
			defer h.Close()
			p := make([]byte, 1000)
			off := int64(i * 1000)
			if _, err := h.ReadAt(context.Background(), p, off); err != nil {
				errs <- err
			} else if !bytes.Equal(p, data[off:off+1000]) {
				errs <- errors.New("wrong bytes")
			}
		}()
	}
	close(g.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := f.src.Stats().Gets; n != 1 {
		t.Fatalf("%d GETs for one part read by 17 readers", n)
	}
}

func TestStaleVersionIsNeverMixedIn(t *testing.T) {
	f := newFixture(t, Options{})
	old := f.src.Put("k", randBytes(5, 2*testPart))
	h := f.openHandle(old)
	// Second part first, then the first: neither read is sequential, so
	// nothing is read ahead.
	if _, err := h.ReadAt(context.Background(), buf(10), testPart+5); err != nil {
		t.Fatal(err)
	}
	if _, err := f.src.Replace("k", randBytes(6, 2*testPart)); err != nil {
		t.Fatal(err)
	}
	_, err := h.ReadAt(context.Background(), buf(10), 0)
	if !errors.Is(err, index.ErrStale) {
		t.Fatalf("read of a replaced object: %v, want ErrStale", err)
	}
	rec, _, err := f.db.Record(ObjectID("bucket", old))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Present.Count() != testPart/testBlock {
		t.Fatalf("%d blocks recorded, want only the first part's", rec.Present.Count())
	}
}

func TestFaultsRecordNothingUnproven(t *testing.T) {
	for _, point := range []string{"write", "sync", "record"} {
		t.Run(point, func(t *testing.T) {
			injected := errors.New("injected " + point)
			var armed sync.Mutex
			fail := true
			f := newFixture(t, Options{Fault: func(p, id string) error {
				armed.Lock()
				defer armed.Unlock()
				if p == point && fail {
					return injected
				}
				return nil
			}})
			data := randBytes(7, testPart)
			obj := f.src.Put("f", data)
			h := f.openHandle(obj)
			if _, err := h.ReadAt(context.Background(), buf(10), 0); !errors.Is(err, injected) {
				t.Fatalf("read with fault at %s: %v", point, err)
			}
			if rec, ok, _ := f.db.Record(ObjectID("bucket", obj)); ok && rec.Present.Count() > 0 {
				t.Fatalf("fault at %s: %d blocks recorded", point, rec.Present.Count())
			}
			armed.Lock()
			fail = false
			armed.Unlock()
			if got := readAll(t, h); !bytes.Equal(got, data) {
				t.Fatal("bytes after the fault cleared differ")
			}
		})
	}
}

func TestShortBodyIsRetried(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(8, 2*testPart)
	obj := f.src.Put("s", data)
	var mu sync.Mutex
	shorts := 0
	f.src.SetFault(func(op, key string) error {
		mu.Lock()
		defer mu.Unlock()
		if op == memstore.OpGet && shorts < 2 {
			shorts++
			return memstore.ErrShortBody
		}
		return nil
	})
	if got := readAll(t, f.openHandle(obj)); !bytes.Equal(got, data) {
		t.Fatal("bytes differ after short bodies")
	}
	if s := f.c.Stats(); s.BytesFromS3 != int64(len(data)) {
		t.Fatalf("BytesFromS3 = %d: blocks written before the cut were fetched again or lost", s.BytesFromS3)
	}
}

func TestCloseStopsFetches(t *testing.T) {
	f := newFixture(t, Options{})
	obj := f.src.Put("c", randBytes(9, testPart))
	g := holdGets(f.src)
	h := f.openHandle(obj)
	done := make(chan error)
	go func() {
		_, err := h.ReadAt(context.Background(), buf(10), 0)
		done <- err
	}()
	<-g.entered
	c := f.c
	closed := make(chan error)
	go func() { closed <- c.Close() }()
	close(g.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	<-done // the reader is released, with bytes or an error
	if _, err := c.Open(context.Background(), obj); !errors.Is(err, ErrClosed) {
		t.Fatalf("Open after Close: %v", err)
	}
	f.db.Close()
	f.c, f.db = nil, nil
}

func TestWarmFetchesEverythingOnce(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(10, 9*testPart+3)
	obj := f.src.Put("w", data)
	h := f.openHandle(obj)
	if _, err := h.ReadAt(context.Background(), buf(10), 2*testPart); err != nil {
		t.Fatal(err)
	}
	var reported int64
	if err := f.c.Warm(context.Background(), obj, func(n int64) { reported += n }); err != nil {
		t.Fatal(err)
	}
	if reported != int64(len(data)) {
		t.Fatalf("progress reported %d bytes, want %d", reported, len(data))
	}
	if !h.Complete() {
		t.Fatal("not complete after Warm")
	}
	if s := f.c.Stats(); s.BytesFromS3 != int64(len(data)) {
		t.Fatalf("fetched %d bytes for a %d-byte object", s.BytesFromS3, len(data))
	}
	gets := f.src.Stats().Gets
	if err := f.c.Warm(context.Background(), obj, nil); err != nil || f.src.Stats().Gets != gets {
		t.Fatalf("second Warm: %v, %d GETs", err, f.src.Stats().Gets-gets)
	}
	if got := readAll(t, h); !bytes.Equal(got, data) {
		t.Fatal("bytes after Warm differ")
	}
}

func TestNewVersionDropsOldData(t *testing.T) {
	f := newFixture(t, Options{})
	old := f.src.Put("v", randBytes(11, testPart))
	h := f.openHandle(old)
	readAll(t, h)
	h.Close()
	oldPath := objectPath(f.dir, ObjectID("bucket", old))
	if _, err := os.Stat(oldPath); err != nil {
		t.Fatal(err)
	}
	newData := randBytes(12, testPart+5)
	obj, err := f.src.Replace("v", newData)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, f.openHandle(obj)); !bytes.Equal(got, newData) {
		t.Fatal("new version's bytes differ")
	}
	if _, err := os.Stat(oldPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old version's file still there: %v", err)
	}
	if _, ok, _ := f.db.Record(ObjectID("bucket", old)); ok {
		t.Fatal("old version's record still there")
	}
}

func TestOpenOldVersionDroppedOnLastClose(t *testing.T) {
	f := newFixture(t, Options{})
	old := f.src.Put("v", randBytes(13, testPart))
	h := f.openHandle(old)
	readAll(t, h) // kept open while the new version lands
	obj, err := f.src.Replace("v", randBytes(14, testPart))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, f.openHandle(obj))
	oldPath := objectPath(f.dir, ObjectID("bucket", old))
	if _, err := os.Stat(oldPath); err != nil {
		t.Fatalf("old version dropped under its reader: %v", err)
	}
	h.Close()
	if _, err := os.Stat(oldPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old version still there after its last close: %v", err)
	}
}

func TestDamagedCacheFileIsNeverServedShort(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(15, 2*testPart)
	obj := f.cached("d", data)
	f.close()
	if err := os.Truncate(objectPath(f.dir, ObjectID("bucket", obj)), testPart); err != nil {
		t.Fatal(err)
	}
	f.open(Options{})
	h := f.openHandle(obj)
	p := buf(100)
	n, err := h.ReadAt(context.Background(), p, 2*testPart-100)
	if err != nil || n != 100 || !bytes.Equal(p, data[2*testPart-100:]) {
		t.Fatalf("read past a truncated cache file: n=%d err=%v, want S3's bytes", n, err)
	}
	if f.c.Stats().Corrupt == 0 {
		t.Fatal("the damage was not counted")
	}
}

func TestDamagedBlockIsFetchedAgain(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(17, 3*testPart)
	obj := f.cached("x", data)
	f.close()
	// Flip bytes in the middle of block 5, as a failing SSD might.
	file, err := os.OpenFile(objectPath(f.dir, ObjectID("bucket", obj)), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := file.WriteAt([]byte("rot"), 5*testBlock+77); err != nil {
		t.Fatal(err)
	}
	file.Close()
	f.open(Options{})
	gets := f.src.Stats().Gets
	if got := readAll(t, f.openHandle(obj)); !bytes.Equal(got, data) {
		t.Fatal("damaged cached bytes were served")
	}
	if s := f.c.Stats(); s.Corrupt != 1 || f.src.Stats().Gets == gets {
		t.Fatalf("damage: %d found, %d GETs after it", s.Corrupt, f.src.Stats().Gets-gets)
	}
	// Fetched again and checked: a third run reads it from SSD.
	f.close()
	f.open(Options{})
	gets = f.src.Stats().Gets
	if got := readAll(t, f.openHandle(obj)); !bytes.Equal(got, data) || f.src.Stats().Gets != gets {
		t.Fatal("the refetched object is not served from SSD")
	}
}

func TestRecordOfAnotherBlockSizeIsReset(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(16, 3*testPart)
	obj := f.cached("b", data)
	f.close()
	f.open(Options{BlockSize: 2 * testBlock, PartSize: testPart})
	if got := readAll(t, f.openHandle(obj)); !bytes.Equal(got, data) {
		t.Fatal("bytes differ after the block size changed")
	}
	rec, _, _ := f.db.Record(ObjectID("bucket", obj))
	if rec.BlockSize != 2*testBlock || !rec.Complete() {
		t.Fatalf("record after the block size changed: %d-byte blocks, complete %v", rec.BlockSize, rec.Complete())
	}
}

func TestConcurrentOpensShareOneLoad(t *testing.T) {
	f := newFixture(t, Options{})
	good := f.src.Put("ok", randBytes(18, testBlock))
	bad := f.src.Put("bad", randBytes(19, testBlock))
	// A file where the folder of bad's cache file must go: its load fails.
	badDir := filepath.Dir(objectPath(f.dir, ObjectID("bucket", bad)))
	if filepath.Dir(objectPath(f.dir, ObjectID("bucket", good))) == badDir {
		t.Fatal("both IDs share a folder; pick other keys")
	}
	if err := os.WriteFile(badDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := good
			if i%2 == 1 {
				o = bad
			}
			h, err := f.c.Open(context.Background(), o)
			if o == bad {
				if err == nil {
					h.Close()
					errs <- errors.New("open of an object whose folder cannot be made succeeded")
				}
				return
			}
			if err != nil {
				errs <- err
				return
			}
			defer h.Close()
			p := make([]byte, 10)
			if _, err := h.ReadAt(context.Background(), p, 0); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := f.c.Stats().OpenObjects; n != 0 {
		t.Fatalf("%d objects still held after every handle closed", n)
	}
}
