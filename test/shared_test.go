package test

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Two daemons, as on two nodes, share a folder tier (--shared-cache): the
// first fetches the dataset from S3 and publishes every file; the second
// then reads it all with no GET, each file proven by its ETag (the dataset
// is uploaded with `aws s3 sync`, so its large files have multipart ETags);
// a third, given an entry whose bytes were changed, refuses it and reads
// that file from S3, right.
func TestSharedCacheTwoNodes(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	var total, nonEmpty int64
	for _, b := range files {
		total += int64(len(b))
		if len(b) > 0 {
			nonEmpty++
		}
	}
	tier := t.TempDir()
	a := e.mount(t, "--shared-cache", tier)
	readAll(t, a.dir, files)
	waitFor(t, 2*time.Minute, "node A to publish every file", func() bool {
		s := e.status(t, a)
		if s.PublishErrors+s.PublishDropped > 0 {
			t.Fatalf("node A: %d publishes failed, %d dropped", s.PublishErrors, s.PublishDropped)
		}
		return s.Published == nonEmpty
	})

	b := e.mount(t, "-o", "shared_cache="+tier)
	e.proxy.Reset()
	readAll(t, b.dir, files)
	if c := e.proxy.Counts(); c.GetObject != 0 {
		t.Errorf("node B made %d GETs for a dataset in the shared cache, want 0", c.GetObject)
	}
	if s := e.status(t, b); s.TierBytes != total || s.TierRejected != 0 || s.Published != 0 {
		t.Errorf("node B: %d bytes from the shared cache (want %d), %d refused, %d published", s.TierBytes, total, s.TierRejected, s.Published)
	}

	entries, err := filepath.Glob(filepath.Join(tier, "*", "objects", "*", "*"))
	if err != nil || int64(len(entries)) != nonEmpty {
		t.Fatalf("%d tier entries, want %d (%v)", len(entries), nonEmpty, err)
	}
	poisonFile(t, entries[0])
	c := e.mount(t, "--shared-cache", tier)
	e.proxy.Reset()
	readAll(t, c.dir, files)
	if got := e.proxy.Counts().GetObject; got == 0 {
		t.Error("node C made no GET: the poisoned entry was served")
	}
	if s := e.status(t, c); s.TierRejected != 1 || s.TierBytes >= total {
		t.Errorf("node C: %d entries refused (want 1), %d of %d bytes from the shared cache", s.TierRejected, s.TierBytes, total)
	}
}

// poisonFile flips a bit in the middle of a file's first kilobyte.
func poisonFile(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 2 {
		t.Fatalf("read %s: %d bytes, %v", path, len(b), err)
	}
	b[min(len(b)/2, 512)] ^= 0x10
	if err := os.WriteFile(path, b, 0o664); err != nil {
		t.Fatal(err)
	}
}
