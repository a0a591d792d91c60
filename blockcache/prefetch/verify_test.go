package prefetch

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"s3cachefs/index"
)

func TestVerifyAndEvict(t *testing.T) {
	f, j := jobFixture(t, JobOptions{})
	a := f.src.Put("s/a", randBytes(60, testPart))
	b := f.src.Put("s/b", randBytes(61, 2*testPart))
	f.src.Put("s/c", randBytes(62, testPart))
	stale := f.src.Put("s/d", randBytes(63, testPart))
	for _, o := range []index.Object{a, stale} {
		h := f.openHandle(o)
		readAll(t, h)
		h.Close()
	}
	hb := f.openHandle(b)
	// The last bytes: a read at the start would read ahead into the rest.
	if _, err := hb.ReadAt(context.Background(), buf(10), 2*testPart-10); err != nil {
		t.Fatal(err)
	}
	if _, err := f.src.Replace("s/d", randBytes(64, testPart)); err != nil {
		t.Fatal(err)
	}
	rs, err := j.Verify(context.Background(), []string{"s"}, false)
	if err != nil {
		t.Fatal(err)
	}
	r := rs[0]
	if r.InS3 != 4 || r.Cached != 1 || r.Partial != 1 || r.Stale != 1 || r.Missing != 1 {
		t.Fatalf("verify: %+v", r)
	}

	// --deep catches a damaged cached file and drops it.
	path := f.c.FilePath(f.id(a))
	file, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := file.WriteAt([]byte("XXXX"), 100); err != nil {
		t.Fatal(err)
	}
	file.Close()
	rs, err = j.Verify(context.Background(), []string{"s/a"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs[0].Corrupt) != 1 || rs[0].Corrupt[0] != "s/a@0" || rs[0].Checked != 0 || rs[0].Partial != 1 {
		t.Fatalf("deep verify of a damaged block: %+v", rs[0])
	}
	if rec, _, _ := f.db.Record(f.id(a)); rec.Present.Has(0) {
		t.Fatal("the damaged block is still recorded")
	}
	ha := f.openHandle(a)
	readAll(t, ha) // fetched again
	ha.Close()
	if rs, _ = j.Verify(context.Background(), []string{"s/a"}, true); rs[0].Checked != 1 {
		t.Fatalf("deep verify after the refetch: %+v", rs[0])
	}

	// evict drops what is not open and keeps what is.
	dropped, busy, err := j.Evict(context.Background(), []string{"s"})
	if err != nil {
		t.Fatal(err)
	}
	if dropped != 1 || busy != 1 { // a dropped; b open (hb); c, d uncached
		t.Fatalf("evict: dropped %d, busy %d", dropped, busy)
	}
}

// Unpin and evict of a path inside a pinned folder are refused, naming the
// job and the folder, and release nothing; of the folder itself (or one
// above it) they release the job's pin.
func TestUnpinInsideAPinnedFolderIsRefused(t *testing.T) {
	f, j := jobFixture(t, JobOptions{})
	a := f.src.Put("s/sub/a", randBytes(65, testPart))
	p, err := j.Start(context.Background(), []string{"s"})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, j, p.ID)
	_, err = j.Unpin(context.Background(), []string{"s/sub"})
	if !errors.Is(err, index.ErrPinnedAbove) || !strings.Contains(err.Error(), "s/sub is pinned by prefetch job "+p.ID+" through s;") {
		t.Fatalf("Unpin(s/sub) = %v; want a refusal naming job %s and s", err, p.ID)
	}
	if _, _, err := j.Evict(context.Background(), []string{"s/sub/a"}); !errors.Is(err, index.ErrPinnedAbove) {
		t.Fatalf("Evict(s/sub/a) = %v; want ErrPinnedAbove", err)
	}
	if rec, ok, _ := f.db.Record(f.id(a)); !ok || !rec.Complete() || !f.db.PinnedKey(a.Key) {
		t.Fatal("a refused evict dropped or unpinned the object")
	}
	if n, err := j.Unpin(context.Background(), []string{""}); err != nil || n != 1 {
		t.Fatalf("Unpin of the root = %d, %v", n, err)
	}
	if f.db.PinnedKey(a.Key) || len(f.db.Pins()) != 0 {
		t.Fatalf("pins left after unpinning the root: %+v", f.db.Pins())
	}
}
