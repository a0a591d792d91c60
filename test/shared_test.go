package test

import (
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Two daemons, as on two nodes, share a tier (--shared-cache, a folder or
// a bucket): the first fetches the dataset from S3 and publishes every
// file; the second then reads it all with no GET, each file proven by its
// ETag (the dataset is uploaded with `aws s3 sync`, so its large files
// have multipart ETags); a third, given an entry whose bytes were changed
// and whose CRC table was rewritten to match, refuses it and reads that
// file from S3, right.
func TestSharedCacheTwoNodes(t *testing.T) { forEachTier(t, testSharedCacheTwoNodes) }

func testSharedCacheTwoNodes(t *testing.T, e *env, tier sharedTier) {
	e.uploadDataset(t)
	files := sourceFiles(t)
	var total, nonEmpty int64
	for _, b := range files {
		total += int64(len(b))
		if len(b) > 0 {
			nonEmpty++
		}
	}
	a := e.mount(t, tier.flags()...)
	readAll(t, a.dir, files)
	waitFor(t, 2*time.Minute, "node A to publish every file", func() bool {
		s := e.status(t, a)
		if s.PublishErrors+s.PublishDropped > 0 {
			t.Fatalf("node A: %d publishes failed, %d dropped", s.PublishErrors, s.PublishDropped)
		}
		return s.Published == nonEmpty
	})

	b := e.mount(t, "-o", tier.option())
	e.proxy.Reset()
	readAll(t, b.dir, files)
	if c := e.proxy.Counts(); c.GetObject != 0 {
		t.Errorf("node B made %d GETs for a dataset in the shared cache, want 0", c.GetObject)
	}
	if s := e.status(t, b); s.TierBytes != total || s.TierRejected != 0 || s.Published != 0 {
		t.Errorf("node B: %d bytes from the shared cache (want %d), %d refused, %d published", s.TierBytes, total, s.TierRejected, s.Published)
	}

	entries := tier.entries(t)
	if int64(len(entries)) != nonEmpty {
		t.Fatalf("%d tier entries, want %d", len(entries), nonEmpty)
	}
	tier.poison(t, entries[0])
	c := e.mount(t, tier.flags()...)
	e.proxy.Reset()
	readAll(t, c.dir, files)
	if got := e.proxy.Counts().GetObject; got == 0 {
		t.Error("node C made no GET: the poisoned entry was served")
	}
	if s := e.status(t, c); s.TierRejected != 1 || s.TierBytes >= total {
		t.Errorf("node C: %d entries refused (want 1), %d of %d bytes from the shared cache", s.TierRejected, s.TierBytes, total)
	}
	// Refused by the ETag's MD5 (of the object, or of its parts), not by
	// the trailer, which the poisoner rewrote to match.
	if log := readLog(c.cache); !strings.Contains(log, "the ETag says") && !strings.Contains(log, "gives the ETag") {
		t.Errorf("node C did not refuse the entry by its ETag:\n%s", logTail(c.cache))
	}
}

// trainFiles is the train split of the dataset, by mount-relative name,
// and its bytes.
func trainFiles(t *testing.T) (map[string][]byte, int64) {
	t.Helper()
	files := map[string][]byte{}
	var n int64
	for name, b := range sourceFiles(t) {
		if strings.HasPrefix(name, "train/") {
			files[name] = b
			n += int64(len(b))
		}
	}
	return files, n
}

// prefetchAll runs `prefetch train` on every mount at once and fails t
// unless each succeeds.
func (e *env) prefetchAll(t *testing.T, ms []*mounted, extra ...string) {
	t.Helper()
	results := make([]result, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() {
			results[i] = e.run(t, append([]string{"prefetch", "--mount", m.dir, "--interval", "50ms"}, append(extra, "train")...)...)
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("prefetch on node %d: %s", i, r)
		}
	}
}

// Three daemons sharing a tier run `prefetch train` at the same time:
// between them they fetch the split from S3 about once (each object is
// claimed by one node, which publishes it for the others), and each ends
// with all of it cached.
func TestSharedCacheThreeNodesPrefetch(t *testing.T) {
	forEachTier(t, testSharedCacheThreeNodesPrefetch)
}

func testSharedCacheThreeNodesPrefetch(t *testing.T, e *env, tier sharedTier) {
	e.uploadDataset(t)
	files, size := trainFiles(t)
	var nodes []*mounted
	for range 3 {
		nodes = append(nodes, e.mount(t, tier.flags()...))
	}
	e.proxy.Reset()
	e.prefetchAll(t, nodes)
	got := e.proxy.Counts().GetBytes
	t.Logf("3 nodes prefetched a split of %d bytes with %d bytes from S3 (%.2fx)", size, got, float64(got)/float64(size))
	if got < size || float64(got) > 1.05*float64(size) {
		t.Errorf("S3 sent %d bytes for a split of %d prefetched by 3 nodes, want 1 to 1.05 times it", got, size)
	}
	var won int64
	for i, m := range nodes {
		s := e.status(t, m)
		won += s.ClaimsWon
		if s.BytesFromS3+s.TierBytes != size {
			t.Errorf("node %d: %d bytes from S3 and %d from the tier, want the split's %d between them", i, s.BytesFromS3, s.TierBytes, size)
		}
	}
	if won == 0 || won > int64(len(files)) {
		t.Errorf("%d claims won by the 3 nodes for %d files", won, len(files))
	}
	e.proxy.Reset()
	for _, m := range nodes {
		readAll(t, m.dir, files)
	}
	if c := e.proxy.Counts(); c.GetObject != 0 {
		t.Errorf("reading the prefetched split on the 3 nodes made %d GETs", c.GetObject)
	}
}

// A node killed (SIGKILL) while it holds claims delays the others by
// about the claims' TTL: they finish the prefetch, fetching what it held
// themselves, and S3 sends at most 1.3 times the split in all.
func TestSharedCacheKilledClaimant(t *testing.T) { forEachTier(t, testSharedCacheKilledClaimant) }

func testSharedCacheKilledClaimant(t *testing.T, e *env, tier sharedTier) {
	e.uploadDataset(t)
	files, size := trainFiles(t)
	ttl := append(tier.flags(), "--shared-claim-ttl", "2s")
	a := e.mount(t, ttl...)
	e.proxy.Reset()
	e.proxy.SetRate(256 << 10) // so that node A is killed mid-fetch
	if r := e.run(t, "prefetch", "--mount", a.dir, "--detach", "train"); r.code != 0 {
		t.Fatalf("prefetch on node A: %s", r)
	}
	waitFor(t, time.Minute, "node A to claim objects", func() bool { return tier.claims(t) > 0 })
	if err := syscall.Kill(a.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(a.pid, exitTimeout); err != nil {
		t.Fatal(err)
	}
	held := tier.claims(t)
	if held == 0 {
		t.Fatal("node A died holding no claim")
	}
	e.proxy.SetRate(0)
	b, c := e.mount(t, ttl...), e.mount(t, ttl...)
	e.prefetchAll(t, []*mounted{b, c})
	got := e.proxy.Counts().GetBytes
	t.Logf("node A died holding %d claims; S3 sent %d bytes for a split of %d (%.2fx)", held, got, size, float64(got)/float64(size))
	if float64(got) > 1.3*float64(size) {
		t.Errorf("S3 sent %d bytes for a split of %d, want at most 1.3 times it", got, size)
	}
	var waited int64
	for _, m := range []*mounted{b, c} {
		waited += e.status(t, m).ClaimsWaited
		readAll(t, m.dir, files)
	}
	if waited == 0 {
		t.Error("no node waited for a claim of node A")
	}
}

// A tier that is gone (its folder removed, its server stopped under the
// daemon) costs nothing but a warning: prefetch and reads go on from S3,
// right, the failed claims and publishes are counted, and the log says so
// once.
func TestSharedCacheUnreachable(t *testing.T) { forEachTier(t, testSharedCacheUnreachable) }

func testSharedCacheUnreachable(t *testing.T, e *env, tier sharedTier) {
	e.uploadDataset(t)
	files, size := trainFiles(t)
	m := e.mount(t, tier.flags()...)
	tier.disconnect(t)
	e.proxy.Reset()
	e.prefetchAll(t, []*mounted{m})
	readAll(t, m.dir, files)
	if got := e.proxy.Counts().GetBytes; got != size {
		t.Errorf("S3 sent %d bytes for a split of %d", got, size)
	}
	s := e.status(t, m)
	if s.ClaimErrors == 0 || s.PublishErrors == 0 || s.TierBytes != 0 {
		t.Errorf("status: %d claim errors, %d publish errors, %d bytes from the tier; want errors counted and no bytes", s.ClaimErrors, s.PublishErrors, s.TierBytes)
	}
	warnings := 0
	for _, line := range strings.Split(readLog(m.cache), "\n") {
		if strings.Contains(line, "WARN") && strings.Contains(line, "shared cache") {
			warnings++
		}
	}
	if warnings != 1 {
		t.Errorf("%d warnings about the shared cache in the log, want 1:\n%s", warnings, logTail(m.cache))
	}
	if _, ok := tier.(*bucketTier); ok {
		// A bucket tier down at mount is no reason to refuse it.
		n := e.mount(t, tier.flags()...)
		readAll(t, n.dir, files)
		if !strings.Contains(readLog(n.cache), "shared cache bucket not reachable") {
			t.Errorf("a mount with its bucket tier down did not say so:\n%s", logTail(n.cache))
		}
	}
}

// Two nodes each prefetch their shard of train (--shard, and $RANK and
// $WORLD_SIZE): between them S3 sends the split once, and each then reads
// the whole split with no GET, the other's share copied from the tier.
func TestSharedCacheShards(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files, size := trainFiles(t)
	tier := t.TempDir()
	a, b := e.mount(t, "--shared-cache", tier), e.mount(t, "--shared-cache", tier)
	e.proxy.Reset()
	ra := e.run(t, "prefetch", "--mount", a.dir, "--interval", "50ms", "--shard", "0/2", "train")
	rb := e.runWith(t, []string{"RANK=1", "WORLD_SIZE=2"}, "prefetch", "--mount", b.dir, "--interval", "50ms", "train")
	for _, r := range []result{ra, rb} {
		if r.code != 0 || !strings.Contains(r.stdout, "shard ") {
			t.Fatalf("prefetch of a shard: %s", r)
		}
	}
	sa, sb := e.status(t, a), e.status(t, b)
	if sa.BytesFromS3 == 0 || sb.BytesFromS3 == 0 || sa.BytesFromS3+sb.BytesFromS3 != size {
		t.Errorf("the shards fetched %d and %d bytes from S3, want a share each and the split's %d between them", sa.BytesFromS3, sb.BytesFromS3, size)
	}
	for _, m := range []*mounted{a, b} {
		waitFor(t, time.Minute, "the shards to be published", func() bool { return e.status(t, m).Published > 0 })
	}
	waitFor(t, time.Minute, "every file to be published", func() bool {
		return e.status(t, a).Published+e.status(t, b).Published == int64(len(files))
	})
	e.proxy.Reset()
	for _, m := range []*mounted{a, b} {
		readAll(t, m.dir, files)
	}
	if c := e.proxy.Counts(); c.GetObject != 0 {
		t.Errorf("reading the split on both nodes after their shards made %d GETs", c.GetObject)
	}
}
