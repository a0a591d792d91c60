package blockcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// publishedByA reads obj (data) through node A, waits for A to publish it,
// and returns the path of its entry, the tier's only one.
func (p *sharedPair) publishedByA(obj index.Object, data []byte) string {
	p.a.t.Helper()
	p.a.readWhole(obj, data)
	p.a.c.publishing.Wait()
	entries, _ := filepath.Glob(filepath.Join(p.tierIn, "*", "objects", "*", "*"))
	if len(entries) != 1 {
		p.a.t.Fatalf("tier entries %v, want 1", entries)
	}
	return entries[0]
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
	entry := p.publishedByA(obj, data)
	poison(t, entry, 1000)
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
	got, err := os.ReadFile(entry)
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

// waitFor polls cond until it holds: for a state another goroutine reaches
// with no event to wait on (a Warm blocked in the tier).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A prefetch of an object another node has claimed fetches nothing from
// S3: WarmUnclaimed says so at once; Warm waits, then copies the entry that
// node publishes. The claim made by a Warm of its own is gone once the
// object is published.
func TestTierClaims(t *testing.T) {
	p := newSharedPair(t)
	data := randBytes(303, 3*testPart+5)
	obj := p.src.Put("train/d.npz", data)
	v := tier.Version{Bucket: "bucket", Key: obj.Key, ETag: obj.ETag, Size: obj.Size}
	release, ok, err := p.folder.Claim(context.Background(), v) // node A is fetching it
	if err != nil || !ok {
		t.Fatalf("claim: %v, %v", ok, err)
	}
	ctx := context.Background()
	if err := p.b.c.WarmUnclaimed(ctx, obj, nil); !errors.Is(err, ErrClaimed) {
		t.Fatalf("WarmUnclaimed of a claimed object: %v, want ErrClaimed", err)
	}
	done := make(chan error, 1)
	go func() { done <- p.b.c.Warm(ctx, obj, nil) }()
	waitFor(t, "node B to wait for the claim", func() bool { return p.b.c.Stats().ClaimsWaited == 1 })
	select {
	case err := <-done:
		t.Fatalf("Warm returned (%v) while the object was claimed", err)
	default:
	}
	if err := p.folder.Publish(ctx, v, bytes.NewReader(data), testBlock, blockSumsOf(data), nil); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := p.src.Stats(); s.Gets != 0 {
		t.Errorf("%d GETs for an object another node fetched, want 0", s.Gets)
	}
	if s := p.b.c.Stats(); s.TierBytes != obj.Size || s.ClaimsWon != 0 {
		t.Errorf("node B: %+v, want the object from the tier, no claim won", s)
	}
	p.b.readWhole(obj, data)

	// Node A warms an object nobody holds: it claims it, fetches it,
	// publishes it, and lets the claim go.
	other := p.src.Put("train/e.npz", randBytes(304, 2*testPart))
	if err := p.a.c.Warm(ctx, other, nil); err != nil {
		t.Fatal(err)
	}
	p.a.c.publishing.Wait()
	if s := p.a.c.Stats(); s.ClaimsWon != 1 || s.Published != 1 {
		t.Errorf("node A: %+v, want 1 claim won and 1 published", s)
	}
	claims, _ := filepath.Glob(filepath.Join(p.tierIn, "*", "claims", "*"))
	if len(claims) != 0 {
		t.Errorf("claims left in the tier: %v", claims)
	}
}

// A claim whose node died (never renewed) delays a Warm by about the
// claim's TTL; one long dead is broken at once. Either way the waiting node
// then fetches the object from S3 itself.
func TestTierClaimExpires(t *testing.T) {
	for _, c := range []struct {
		name string
		age  time.Duration
	}{{"fresh", 0}, {"long dead", time.Hour}} {
		t.Run(c.name, func(t *testing.T) {
			p := newSharedPair(t)
			p.folder.SetClaimTTL(300 * time.Millisecond)
			data := randBytes(305, 2*testPart+7)
			obj := p.src.Put("dev/f.npz", data)
			v := tier.Version{Bucket: "bucket", Key: obj.Key, ETag: obj.ETag, Size: obj.Size}
			claim := filepath.Join(p.tierIn, "s3cachefs-tier-v1", "claims", tier.Name(v))
			if err := os.WriteFile(claim, []byte("dead 1 x\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			then := time.Now().Add(-c.age)
			os.Chtimes(claim, then, then)
			start := time.Now()
			if err := p.b.c.Warm(context.Background(), obj, nil); err != nil {
				t.Fatal(err)
			}
			waited := time.Since(start)
			if c.age == 0 && waited < 300*time.Millisecond {
				t.Errorf("Warm took %v, less than the claim's TTL", waited)
			}
			if s := p.b.c.Stats(); s.ClaimsWaited != 1 || s.ClaimsWon != 1 || s.BytesFromS3 != obj.Size {
				t.Errorf("node B: %+v, want 1 claim waited, 1 won, the object from S3", s)
			}
			p.b.readWhole(obj, data)
		})
	}
}

// When the tier misses, Warm fetches the object's parts from S3 as many at
// a time as it would without a tier, not one by one.
func TestTierMissWarmsInParallel(t *testing.T) {
	p := newSharedPair(t)
	obj := p.src.Put("dev/g.npz", randBytes(306, 6*testPart))
	var mu sync.Mutex
	started := 0
	second := make(chan struct{})
	p.src.SetFault(func(op, key string) error {
		if op != memstore.OpGet {
			return nil
		}
		mu.Lock()
		started++
		n := started
		mu.Unlock()
		if n == 2 {
			close(second)
		}
		if n == 1 {
			select {
			case <-second:
			case <-time.After(20 * time.Second):
				return errors.New("no second GET while the first was held")
			}
		}
		return nil
	})
	if err := p.a.c.Warm(context.Background(), obj, nil); err != nil {
		t.Fatal(err)
	}
}

// A fill from the tier that is refused, followed by an S3 fetch that fails,
// leaves nothing on disk and nothing counted.
func TestTierRefusedFillLeavesNothing(t *testing.T) {
	p := newSharedPair(t)
	data := randBytes(307, 3*testPart)
	obj := p.src.Put("dev/h.npz", data)
	entry := p.publishedByA(obj, data)
	poison(t, entry, int64(len(data))-10) // found only at the end
	p.src.SetFault(func(op, key string) error {
		if op == memstore.OpGet {
			return errors.New("S3 is down")
		}
		return nil
	})
	if err := p.b.c.Warm(context.Background(), obj, nil); err == nil {
		t.Fatal("Warm succeeded with a poisoned entry and S3 down")
	}
	// Warm returns with the first part that failed; the others end soon.
	waitFor(t, "the other parts' fetches to end", func() bool { return p.b.c.Stats().UsedBytes == 0 })
	if s := p.b.c.Stats(); s.TierRejected != 1 {
		t.Errorf("node B: %+v, want 1 refused entry", s)
	}
	files, _ := filepath.Glob(filepath.Join(FilesDir(p.b.dir), "*", "*"))
	for _, name := range files {
		var st unix.Stat_t
		if err := unix.Stat(name, &st); err != nil {
			t.Fatal(err)
		}
		if st.Blocks != 0 {
			t.Errorf("%s holds %d KiB of the refused entry", name, st.Blocks/2)
		}
	}
}

// blockSumsOf is the CRC-32C of each block of data, as the cache sums.
func blockSumsOf(data []byte) []uint32 {
	var sums []uint32
	for off := 0; off < len(data); off += testBlock {
		sums = append(sums, blockSum(data[off:min(off+testBlock, len(data))]))
	}
	return sums
}

// spyTier is a folder tier that counts claims made and released, and can
// pretend another node holds every claim or fail AwaitClaim.
type spyTier struct {
	*tier.Shared
	claimed, released atomic.Int32
	othersHold        bool  // Claim: another node holds it
	awaitErr          error // AwaitClaim's error
}

func (s *spyTier) Claim(ctx context.Context, obj index.Object) (func(), bool, error) {
	if s.othersHold {
		return nil, false, nil
	}
	release, ok, err := s.Shared.Claim(ctx, obj)
	if !ok || err != nil {
		return release, ok, err
	}
	s.claimed.Add(1)
	return func() { s.released.Add(1); release() }, true, nil
}

func (s *spyTier) AwaitClaim(ctx context.Context, obj index.Object) error {
	if s.awaitErr != nil {
		return s.awaitErr
	}
	return s.Shared.AwaitClaim(ctx, obj)
}

func newSpyTier(t *testing.T) *spyTier {
	folder, err := tier.OpenFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &spyTier{Shared: tier.NewShared(folder, "bucket")}
}

// A second Warm of an object that a first Warm claimed and is fetching
// (an overlapping prefetch job), cancelled, leaves the first's claim
// alone.
func TestTierClaimBelongsToItsWarm(t *testing.T) {
	spy := newSpyTier(t)
	f := &fixture{t: t, dir: t.TempDir(), src: memstore.New()}
	f.open(Options{Tier: spy})
	obj := f.src.Put("k", randBytes(308, 2*testPart))
	hold, getting := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.src.SetFault(func(op, key string) error {
		if op == memstore.OpGet {
			once.Do(func() { close(getting) })
			<-hold
		}
		return nil
	})
	first := make(chan error, 1)
	go func() { first <- f.c.Warm(context.Background(), obj, nil) }()
	<-getting // claimed, and fetching
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	f.c.Warm(cancelled, obj, nil)
	released := spy.released.Load()
	close(hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if released != 0 {
		t.Errorf("a cancelled second Warm released the claim the first held while fetching")
	}
	f.c.publishing.Wait()
	if c, r := spy.claimed.Load(), spy.released.Load(); c != 1 || r != 1 {
		t.Errorf("%d claims made, %d released; want 1 and 1 once published", c, r)
	}
}

// A tier whose claims cannot be waited for (EIO) does not fail a Warm:
// the object is fetched from S3, the trouble counted.
func TestTierAwaitErrorFetchesFromS3(t *testing.T) {
	spy := newSpyTier(t)
	spy.othersHold = true
	spy.awaitErr = errors.New("stat claim: input/output error")
	f := &fixture{t: t, dir: t.TempDir(), src: memstore.New()}
	f.open(Options{Tier: spy})
	data := randBytes(309, 2*testPart)
	obj := f.src.Put("k", data)
	if err := f.c.Warm(context.Background(), obj, nil); err != nil {
		t.Fatalf("Warm with a tier that cannot wait: %v, want a fetch from S3", err)
	}
	if s := f.c.Stats(); s.ClaimErrors != 1 || s.BytesFromS3 != obj.Size {
		t.Errorf("%+v: want 1 claim error and the object from S3", s)
	}
	f.readWhole(obj, data)
}

// kmsSource serves a memstore's objects under any ETag asked for, as S3
// serves objects whose ETag is not their MD5 (SSE-KMS).
type kmsSource struct{ src *memstore.Store }

func (k kmsSource) GetRange(ctx context.Context, key, etag string, off, n int64) (io.ReadCloser, error) {
	return k.src.GetRange(ctx, key, "", off, n)
}

// An ETag that looks like an MD5 but is not the bytes' (SSE-KMS) is found
// out by the first node to publish the object: it marks the object, and
// the next node fetches it from S3 without waiting for anyone; after a
// few such objects a node stops sharing the bucket's objects at all.
func TestTierUnprovableETags(t *testing.T) {
	folder, err := tier.OpenFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mem := memstore.New()
	var nodes []*Cache
	for range 2 {
		dir := t.TempDir()
		db, err := index.Open(filepath.Join(dir, "index.db"), index.Options{})
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(db, kmsSource{mem}, Options{Dir: dir, Bucket: "bucket", BlockSize: testBlock, PartSize: testPart, Tier: tier.NewShared(folder, "bucket")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); db.Close() })
		nodes = append(nodes, c)
	}
	a, b := nodes[0], nodes[1]
	var objs []index.Object
	for i := range 4 {
		obj := mem.Put(fmt.Sprintf("k%d", i), randBytes(uint64(310+i), testPart))
		obj.ETag = fmt.Sprintf("%032x", 310+i) // not its MD5
		objs = append(objs, obj)
	}
	ctx := context.Background()
	if err := a.Warm(ctx, objs[0], nil); err != nil {
		t.Fatal(err)
	}
	a.publishing.Wait()
	if s := a.Stats(); s.ClaimsWon != 1 || s.PublishErrors != 1 || s.Published != 0 {
		t.Fatalf("node A: %+v, want 1 claim and its publish refused", s)
	}
	if err := b.Warm(ctx, objs[0], nil); err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.ClaimsWaited != 0 || s.BytesFromS3 != objs[0].Size {
		t.Errorf("node B: %+v, want the marked object from S3 with no wait", s)
	}
	for _, obj := range objs[1:] {
		if err := a.Warm(ctx, obj, nil); err != nil {
			t.Fatal(err)
		}
		a.publishing.Wait()
	}
	if s := a.Stats(); s.ClaimsWon != 3 {
		t.Errorf("node A claimed %d objects, want 3: after 3 refused publishes it shares none of the bucket", s.ClaimsWon)
	}
}
