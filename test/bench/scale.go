// scale.go measures issue 13's targets (the opt-in `-only scale` figure):
// folders of 10^6 keys, an ImageFolder-style tree, cold reads and a
// prefetch of many small files, a cache of many objects kept full, against
// a synthetic S3 server (s3server.Fake with generated buckets) whose keys
// and bytes cost no disk. Every client goes through a counting proxy with
// the run's -ttfb and -rate, as in the default figures.

package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"s3cachefs/test/s3server"
)

// scaleConfig are the sizes of the scale figure (flags -scale-*). The
// defaults fit ~15 minutes on a 2-core machine against main's daemon of
// issue 13's start; the sizes are given in each flag's help.
type scaleConfig struct {
	bigFolder   int           // keys in the folder that is listed and stat'ed
	smallFolder int           // keys in the folder the RSS comparison starts from
	hugeFolder  int           // keys in the folder of the 10^7 RSS row (0: not run)
	imgFolders  int           // ImageFolder scan: folders ...
	imgFiles    int           // ... of this many files each
	reads       int           // cold reads of random 110 KB files
	readers     int           // readers for them
	prefetch    int           // files of 110 KB prefetched (and rclone-copied)
	cached      int           // tiny objects cached for the status/metrics/eviction/startup rows
	cacheFor    time.Duration // longest the prefetch of those may take
	statFor     time.Duration // longest the 1,000 stats may take on one side
	lsFor       time.Duration // longest the first scandir may take
	fill        int           // files of 1 MiB the eviction rows read
	ttl         time.Duration // --metadata-ttl of the expiry row
}

func (c *scaleConfig) flags(fs *flag.FlagSet) {
	fs.IntVar(&c.bigFolder, "scale-keys", 1_000_000, "scale: keys of the folder listed and stat'ed (issue: 1,000,000)")
	fs.IntVar(&c.smallFolder, "scale-small-keys", 100_000, "scale: keys of the folder the RSS comparison starts from (issue: 100,000)")
	fs.IntVar(&c.hugeFolder, "scale-huge-keys", 0, "scale: keys of the folder the RSS comparison ends at; 0 compares with -scale-keys instead (issue: 10,000,000)")
	fs.IntVar(&c.imgFolders, "scale-img-folders", 300, "scale: folders of the ImageFolder scan (issue: 1,000)")
	fs.IntVar(&c.imgFiles, "scale-img-files", 1300, "scale: files per folder of the ImageFolder scan (issue: 1,300)")
	fs.IntVar(&c.reads, "scale-reads", 10_000, "scale: cold reads of random 110 KB files (issue: 10,000)")
	fs.IntVar(&c.readers, "scale-readers", 64, "scale: readers of the cold reads (issue: 64)")
	fs.IntVar(&c.prefetch, "scale-prefetch", 20_000, "scale: 110 KB files prefetched and rclone-copied (issue: 100,000; ~11 GB of disk)")
	fs.IntVar(&c.cached, "scale-cached", 1_400_000, "scale: tiny objects to cache for the status, metrics, eviction and startup rows (issue: 1,400,000)")
	fs.DurationVar(&c.cacheFor, "scale-cache-for", 3*time.Minute, "scale: longest the prefetch caching -scale-cached objects may run; the rows then say how many it cached")
	fs.DurationVar(&c.statFor, "scale-stat-for", 30*time.Second, "scale: longest the stats of 1,000 names may take on one side; the row then gives the mean of those done")
	fs.DurationVar(&c.lsFor, "scale-ls-for", 10*time.Minute, "scale: longest the first scandir of -scale-keys may take; the daemon is then stopped and the row says how far it got")
	fs.IntVar(&c.fill, "scale-fill", 400, "scale: 1 MiB files the eviction rows read with 8 readers")
	fs.DurationVar(&c.ttl, "scale-ttl", 3*time.Second, "scale: --metadata-ttl of the mount whose listing expires")
}

// The synthetic bucket's folders, all under s3://synth/scale/.
const (
	synthBucket = "synth"
	synthRoot   = "scale"
	smallFile   = 110 << 10 // an ImageNet JPEG's size
)

// scaleFolders are the folders of the synthetic bucket, relative to the
// mount root.
const (
	bigDir   = "big"   // flat, cfg.bigFolder keys
	smallDir = "small" // flat, cfg.smallFolder keys
	hugeDir  = "huge"  // flat, cfg.hugeFolder keys
	imgDir   = "img"   // cfg.imgFolders × cfg.imgFiles
	coldDir  = "cold"  // 100 × 1,000 files for the cold reads
	pfDir    = "pf"    // cfg.prefetch files in folders of 1,000
	tinyDir  = "tiny"  // cfg.cached 1-byte files in folders of 1,000
	fillDir  = "fill"  // cfg.fill files of 1 MiB
)

// scaleSets is the bucket's shape.
func (c scaleConfig) sets() []s3server.Set {
	p := synthRoot + "/"
	folders := func(n int) int { return (n + 999) / 1000 }
	sets := []s3server.Set{
		{Prefix: p + bigDir + "/", File: "%08d.JPEG", Files: c.bigFolder, Size: smallFile},
		{Prefix: p + smallDir + "/", File: "%08d.JPEG", Files: c.smallFolder, Size: smallFile},
		{Prefix: p + imgDir + "/", Folder: "n%05d", Folders: c.imgFolders, File: "%07d.JPEG", Files: c.imgFiles, Size: smallFile},
		{Prefix: p + coldDir + "/", Folder: "c%05d", Folders: 100, File: "%07d.JPEG", Files: 1000, Size: smallFile},
		{Prefix: p + pfDir + "/", Folder: "p%05d", Folders: folders(c.prefetch), File: "%07d.JPEG", Files: 1000, Size: smallFile},
		{Prefix: p + tinyDir + "/", Folder: "t%05d", Folders: folders(c.cached), File: "%07d", Files: 1000, Size: 1},
		{Prefix: p + fillDir + "/", File: "%06d.bin", Files: c.fill, Size: 1 << 20},
	}
	if c.hugeFolder > 0 {
		sets = append(sets, s3server.Set{Prefix: p + hugeDir + "/", File: "%08d.JPEG", Files: c.hugeFolder, Size: smallFile})
	}
	return sets
}

// scaleFigures is what the scale figure measured. A zero stat or count is
// a row not measured; notes say why.
type scaleFigures struct {
	cfg scaleConfig

	lsFirst, lsSecond, lsLocal, rcLsf stat          // scandir of big/: first, second, local folder; rclone lsf
	lsLists, lsHeads, rcLists         int64         // requests of the first scandir / of rclone lsf
	lsEntries                         int           // entries the first scandir returned
	lsUnfinished                      time.Duration // when the first scandir was stopped after cfg.lsFor

	statFS, statLocal       time.Duration // mean time of one stat, kernel caches dropped
	statFSN, statLocalN     int           // stats done within cfg.statFor
	statRequests            int64         // S3 requests during the mount's stats
	rssSmall, rssBig        int64         // VmHWM after listing small/ / big/ (or huge/)
	rssSmallParts           rssSplit      // resident memory by kind then
	rssBigParts             rssSplit
	rssBigKeys              int           // keys of that larger folder
	imgScan                 stat          // scandir + stat of the ImageFolder tree
	imgRSS                  int64         // VmRSS after it
	imgFiles                int           // files stat'ed
	coldFS, coldRclone      stat          // cold reads, files/s from bytes
	prefetch, rcCopy        stat          // prefetch of pf/ / rclone copy --transfers 32
	prefetchRSS             int64         // VmHWM of that daemon
	commits, syncs, fetched int64         // index commits and cache syncs in it, objects fetched
	expiredStat, listTime   time.Duration // first stat after expiry / first stat of a fresh mount (the LIST)
	expiredLists            int64         // LISTs during the expired stat
	refreshLists            int64         // LISTs by a while after it: the refresh
	cachedObjects           int           // objects the status rows ran at
	usedBytes               int64         // cache used_bytes with them
	cacheRate               float64       // objects/s the prefetch of tiny/ cached
	statusTime, metricsTime stat          // `status --json` / GET /metrics
	startup                 stat          // mount with that cache until ready
	fillFull, fillEmpty     stat          // 8 readers of fill/: cache full / empty
	openP99                 time.Duration // p99 open+read of a cached file during fillFull
	opens                   int           // opens sampled
	peakRSS                 int64         // highest VmHWM of any daemon of the figure
	notes                   []string
}

// scaleRun is the figure's server side: the synthetic S3 server and the
// proxy every client reaches it through.
func (b *bench) figScale(ctx context.Context) error {
	sc := &scaleFigures{cfg: b.cfg.scale}
	b.res.scale = sc
	fake := s3server.NewFake()
	b.clean.add("synthetic S3 server", func() error { fake.Close(); return nil })
	if err := fake.CreateSynthBucket(synthBucket, sc.cfg.sets()...); err != nil {
		return err
	}
	// The figures' helpers (mounts, rclone, childEnv) reach S3 through
	// b.server and b.proxy: point them at the synthetic server for the
	// figure, and back after.
	oldServer, oldProxy := b.server, b.proxy
	defer func() { b.server, b.proxy = oldServer, oldProxy }()
	b.server = fake.Server()
	p, err := b.server.StartProxy(s3server.ProxyOptions{TTFB: b.cfg.ttfb, Rate: b.cfg.rate, Log: b.path("logs", "scale-proxy.log")})
	if err != nil {
		return err
	}
	b.clean.add("scale proxy", p.Close)
	b.proxy = p
	b.logf("synthetic S3 on %s, proxy on %s", fake.Endpoint, p.Endpoint)
	for _, step := range []struct {
		name string
		fn   func(context.Context, *scaleFigures) error
	}{
		{"ls and stat of a folder of many keys", b.scaleListing},
		{"RSS against keys listed", b.scaleRSS},
		{"ImageFolder scan", b.scaleImageFolder},
		{"cold reads of small files", b.scaleColdReads},
		{"prefetch of small files", b.scalePrefetch},
		{"stat after the listing expired", b.scaleExpiry},
		{"many cached objects: status, metrics, startup, eviction", b.scaleCached},
	} {
		b.logf("-- scale: %s", step.name)
		if err := step.fn(ctx, sc); err != nil {
			return fmt.Errorf("%s: %w", step.name, err)
		}
	}
	return nil
}

// scaleSource is what every scale mount serves.
var scaleSource = fmt.Sprintf("s3://%s/%s", synthBucket, synthRoot)

// scaleMount mounts the synthetic bucket on a fresh (or, with keep, the
// existing) cache dir WORK/tmp/NAME-cache.
func (b *bench) scaleMount(ctx context.Context, name string, keep bool, flags ...string) (*fsMount, error) {
	cache := b.path("tmp", name+"-cache")
	if !keep {
		if err := os.RemoveAll(cache); err != nil {
			return nil, err
		}
	}
	return b.mountSource(ctx, b.bin, scaleSource, name, cache, flags...)
}

// scaleDrop notes the daemon's peak RSS and unmounts it.
func (b *bench) scaleDrop(sc *scaleFigures, m *fsMount, purge bool) error {
	if rss, err := peakRSS(m.pid); err == nil {
		sc.peakRSS = max(sc.peakRSS, rss)
	}
	return b.dropFS(m, purge)
}

// scandir reads dir's entries the way os.scandir does (getdents, no
// stat), in batches, and returns how many there are.
func scandir(dir string) (int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	for {
		es, err := f.ReadDir(4096)
		n += len(es)
		if err != nil || len(es) == 0 {
			return n, nil
		}
	}
}

// timedScandir scandirs dir into s and checks that it has want entries.
func timedScandir(s *stat, dir string, want int) error {
	var n int
	d, err := timed(func() (err error) { n, err = scandir(dir); return err })
	if err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("scandir %s: %d entries, want %d", dir, n, want)
	}
	s.add(d, 0)
	return nil
}

// localFolder makes (once; kept with -keep) a local folder of n empty
// files named as the synthetic folder's are.
func (b *bench) localFolder(n int) (string, error) {
	dir := b.path("scale-local", fmt.Sprintf("keys-%d", n))
	if stamped(dir+".done", "ok") {
		return dir, nil
	}
	b.logf("making a local folder of %d files in %s (kept with -keep)", n, dir)
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for i := range n {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%08d.JPEG", i)))
		if err != nil {
			return "", err
		}
		f.Close()
	}
	return dir, os.WriteFile(dir+".done", []byte("ok"), 0o644)
}

// randomNames are k of the n names of a flat synthetic folder, seeded.
func randomNames(n, k int, seed uint64) []string {
	rng := rand.New(rand.NewPCG(seed, 13))
	out := make([]string, min(k, n))
	for i, j := range rng.Perm(n)[:len(out)] {
		out[i] = fmt.Sprintf("%08d.JPEG", j)
	}
	return out
}

// timeStats stats names in dir after dropping kernel caches, for at most
// limit, and returns the mean time of one stat and how many were done.
func timeStats(dir string, names []string, limit time.Duration) (time.Duration, int, error) {
	if err := dropCaches(); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	n := 0
	for _, name := range names {
		if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
			return 0, n, err
		}
		n++
		if time.Since(start) > limit {
			break
		}
	}
	return time.Since(start) / time.Duration(max(n, 1)), n, nil
}
