package blockcache

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestDiskFullReadsUncached makes every write to an object's cache file
// fail with ENOSPC, as a filesystem filled by another process does (the
// cache file is /dev/full): reads must still return the source's bytes,
// uncached; nothing may be recorded; the cache must say it is full, and
// no fetch counts as failed.
func TestDiskFullReadsUncached(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skipf("no /dev/full to stand for a full disk: %v", err)
	}
	f := newFixture(t, Options{})
	data := randBytes(31, 2*testPart+777)
	obj := f.src.Put("full", data)
	id := ObjectID("bucket", obj)
	path := objectPath(f.dir, id)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/full", path); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, f.openHandle(obj)); !bytes.Equal(got, data) {
		t.Fatalf("read on a full disk differs from the source at %d", powerLossDiff(got, data))
	}
	if rec, ok, err := f.db.Record(id); err != nil || ok && rec.Present.Count() != 0 {
		t.Fatalf("a write that hit ENOSPC was recorded: %d blocks (err %v)", rec.Present.Count(), err)
	}
	s := f.c.Stats()
	if !s.Full || s.Uncached == 0 || s.FetchErrors != 0 || s.UsedBytes != 0 {
		t.Fatalf("stats after reads on a full disk: %+v; want Full, uncached reads, no fetch errors, nothing used", s)
	}
}
