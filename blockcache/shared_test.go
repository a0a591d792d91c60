package blockcache

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"s3cachefs/blockcache/s3store/memstore"
	"s3cachefs/blockcache/tier"
	"s3cachefs/index"
)

// sharedPair is two caches, as on two nodes, over one S3 and one folder
// tier.
type sharedPair struct {
	src    *memstore.Store
	folder *tier.Folder
	tierIn string
	a, b   *fixture
}

func newSharedPair(t *testing.T) *sharedPair {
	t.Helper()
	p := &sharedPair{src: memstore.New(), tierIn: t.TempDir()}
	folder, err := tier.OpenFolder(p.tierIn)
	if err != nil {
		t.Fatal(err)
	}
	p.folder = folder
	for _, f := range []**fixture{&p.a, &p.b} {
		*f = &fixture{t: t, dir: t.TempDir(), src: p.src}
		(*f).open(Options{Tier: tier.NewShared(folder, "bucket")})
	}
	return p
}

// readWhole reads obj through f's cache and checks the bytes.
func (f *fixture) readWhole(obj index.Object, want []byte) {
	f.t.Helper()
	h := f.openHandle(obj)
	if got := readAll(f.t, h); !bytes.Equal(got, want) {
		f.t.Fatalf("%s: %d bytes read, not the object's %d", obj.Key, len(got), len(want))
	}
	h.Close()
}

// An object one node fetched from S3 is published once complete; another
// node then copies it from the tier with no GET, proven by its ETag, and
// serves it right; a third read is a plain hit.
func TestTierSharesObjects(t *testing.T) {
	p := newSharedPair(t)
	data := randBytes(300, 3*testPart+123)
	obj := p.src.Put("train/a.npz", data) // a single-part ETag: its MD5
	p.a.readWhole(obj, data)
	p.a.c.publishing.Wait()
	if s := p.a.c.Stats(); s.Published != 1 || s.TierMisses != 1 || s.TierBytes != 0 {
		t.Fatalf("node A: %+v, want 1 published after 1 tier miss", s)
	}
	gets := p.src.Stats().Gets
	p.b.readWhole(obj, data)
	if got := p.src.Stats().Gets - gets; got != 0 {
		t.Errorf("node B made %d GETs for an object in the tier, want 0", got)
	}
	s := p.b.c.Stats()
	if s.TierBytes != obj.Size || s.BytesFromS3 != 0 || s.Published != 0 {
		t.Errorf("node B: %+v, want the object's %d bytes from the tier, none from S3, nothing published", s, obj.Size)
	}
	p.b.readWhole(obj, data)
	if got := p.src.Stats().Gets - gets; got != 0 {
		t.Errorf("node B's second read made %d GETs", got)
	}
}

// A tier entry whose bytes were changed is never served: the ETag check
// refuses it, the object comes from S3, the refusal is counted, and the
// entry is removed, so that the good copy the node then publishes takes
// its place.
func TestTierRefusesPoisonedEntry(t *testing.T) {
	p := newSharedPair(t)
	data := randBytes(301, 2*testPart)
	obj := p.src.Put("train/b.npz", data)
	p.a.readWhole(obj, data)
	p.a.c.publishing.Wait()
	entries, _ := filepath.Glob(filepath.Join(p.tierIn, "*", "objects", "*", "*"))
	if len(entries) != 1 {
		t.Fatalf("tier entries %v, want 1", entries)
	}
	poison(t, entries[0], 1000)
	gets := p.src.Stats().Gets
	p.b.readWhole(obj, data)
	if p.src.Stats().Gets == gets {
		t.Error("the object was not fetched from S3 after the tier entry was refused")
	}
	if s := p.b.c.Stats(); s.TierRejected != 1 || s.TierBytes != 0 {
		t.Errorf("node B: %+v, want 1 refused entry and no bytes from the tier", s)
	}
	// Node B fetched it from S3, so it publishes it in the poisoned
	// entry's place.
	p.b.c.publishing.Wait()
	if s := p.b.c.Stats(); s.Published != 1 {
		t.Errorf("node B published %d objects, want the one it fetched", s.Published)
	}
	got, err := os.ReadFile(entries[0])
	if err != nil || len(got) < len(data) || !bytes.Equal(got[:len(data)], data) {
		t.Errorf("the tier entry is not the object again (%v)", err)
	}
}

// A prefetch (Warm) on a node whose tier lacks the object fetches it from
// S3 as usual, and one on a node whose tier has it copies it.
func TestTierWarm(t *testing.T) {
	p := newSharedPair(t)
	data := randBytes(302, 5*testPart+1)
	obj := p.src.Put("dev/c.npz", data)
	if err := p.a.c.Warm(context.Background(), obj, nil); err != nil {
		t.Fatal(err)
	}
	p.a.c.publishing.Wait()
	gets := p.src.Stats().Gets
	if err := p.b.c.Warm(context.Background(), obj, nil); err != nil {
		t.Fatal(err)
	}
	if got := p.src.Stats().Gets - gets; got != 0 {
		t.Errorf("node B's Warm made %d GETs, want 0", got)
	}
	p.b.readWhole(obj, data)
}

// poison flips a bit of the byte at off of a file.
func poison(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x20
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
