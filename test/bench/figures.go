// figures.go runs every measurement of issue 5's table, in an order that
// lets later figures reuse what earlier ones set up, and records them.

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// results is everything measured; render turns it into the table.
type results struct {
	readMode                     string  // s3cachefs's read path, from status
	rawWarm, rawHot              stat    // local disk, train split
	fsWarm, fsHot                stat    // s3cachefs, cached train split
	fsColdOne, singleGet         stat    // one large file, empty cache / one GET
	fsColdSplit                  stat    // train split, empty cache, parallel readers
	fsPrefetch, awsSync, rcCopy  stat    // train split into the cache / a local folder
	lsFirst, lsSecond, lsDropped stat    // ls -l of meta_train; the last after dropping kernel caches
	lsLists, lsHeads             int64   // most LISTs and HEADs of any first ls -l
	statFiles                    stat    // stat of random files of a listed folder
	statRequests                 int64   // S3 requests during those stats, all runs
	rssSmall, rssLarge           int64   // daemon VmHWM after prefetching part / all
	remount                      stat    // read everything after a remount
	remountLarge, remountSmall   stat    // the same: train+dev, then the small files
	remountGets, remountLists    int64   // requests during that read
	rcCold, rcWarm, rcHot        stat    // rclone mount --vfs-cache-mode full
	statCount                    int     // files stat'ed per run
	chkDisk, chkDaemon, chkOld   stat    // warm train split: local disk / through the daemon / the baseline's
	chkCPU, chkOldCPU            cpuUse  // daemon CPU over chkDaemon / chkOld
	chkBlocks                    int64   // blocks this build checked over chkDaemon
	crcPerGB                     float64 // CPU-s per GB of CRC-32C alone
	baselineRev                  string  // the baseline's short commit ("": not measured)
	gvisor                       *gvisorFigures
	trainer                      *trainerFigures
	scale                        *scaleFigures
	shared                       *sharedFigures
}

// figure is one step of the run.
type figure struct {
	name string
	fn   func(context.Context) error
}

// figureKeys name the figures for -only, in the order they run.
var figureKeys = []string{"disk", "get", "cold-one", "cold-split", "prefetch", "aws", "rclone", "ls", "rss", "rclone-mount", "checks", "gvisor", "trainer", "shared"}

// optInKeys name the figures that run only when -only names them, after
// the others: they take longer than a default run may.
var optInKeys = []string{"scale"}

func (b *bench) figures(ctx context.Context) error {
	fns := map[string]func(context.Context) error{
		"disk": b.figRawDisk, "get": b.figSingleGet, "cold-one": b.figColdOne,
		"cold-split": b.figColdSplit, "prefetch": b.figPrefetch, "aws": b.figAwsSync,
		"rclone": b.figRcloneCopy, "ls": b.figListing, "rss": b.figRSSRemount,
		"rclone-mount": b.figRcloneMount, "checks": b.figChecks, "gvisor": b.figGVisor,
		"trainer": b.figTrainer, "scale": b.figScale, "shared": b.figShared,
	}
	for _, k := range append(slices.Clone(figureKeys), optInKeys...) {
		if len(b.cfg.only) > 0 && !slices.Contains(b.cfg.only, k) || len(b.cfg.only) == 0 && slices.Contains(optInKeys, k) {
			continue
		}
		b.logf("== %s", k)
		if err := fns[k](ctx); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	return nil
}

// trainPaths are the train split's files under root.
func (b *bench) trainPaths(root string) []string { return b.spec.paths(root, trainDir) }

// measureReads times reads of paths runs times, dropping the page cache
// before each when drop is set.
func (b *bench) measureReads(ctx context.Context, s *stat, paths []string, drop bool) error {
	for range b.cfg.runs {
		if err := b.sampleReads(ctx, s, paths, drop); err != nil {
			return err
		}
	}
	return nil
}

// sampleReads adds one timed read of paths by b.cfg.readers readers to s,
// dropping the page cache first when drop is set.
func (b *bench) sampleReads(ctx context.Context, s *stat, paths []string, drop bool) error {
	if drop {
		if err := dropCaches(); err != nil {
			return err
		}
	}
	var n int64
	d, err := timed(func() (err error) { n, err = readFiles(ctx, paths, b.cfg.readers); return err })
	if err != nil {
		return err
	}
	s.add(d, n)
	return nil
}

// measurePairs takes runs samples of reading pathsA into a and pathsB
// into bs, alternating, dropping the page cache before each when drop.
// Without drop, one read of each first makes both hot.
func (b *bench) measurePairs(ctx context.Context, runs int, drop bool, a *stat, pathsA []string, bs *stat, pathsB []string) error {
	if !drop {
		for _, p := range [][]string{pathsA, pathsB} {
			if _, err := readFiles(ctx, p, b.cfg.readers); err != nil {
				return err
			}
		}
	}
	for range runs {
		for _, side := range []struct {
			s     *stat
			paths []string
		}{{a, pathsA}, {bs, pathsB}} {
			if err := b.sampleReads(ctx, side.s, side.paths, drop); err != nil {
				return err
			}
		}
	}
	return nil
}

// warmServer reads the server's own copy of the train split, so every
// cold figure sees versitygw serve from memory, as S3 would not be
// limited by one disk, whatever page-cache drops came before.
func (b *bench) warmServer(ctx context.Context) error {
	_, err := readFiles(ctx, b.trainPaths(b.path("s3root", bucket, prefix)), 2)
	return err
}

func (b *bench) figRawDisk(ctx context.Context) error {
	train := b.trainPaths(b.path("dataset"))
	if err := b.measureReads(ctx, &b.res.rawWarm, train, true); err != nil {
		return err
	}
	b.logf("raw warm: %s [%s]", b.res.rawWarm, b.res.rawWarm.all())
	// The last warm run left the split in the page cache.
	if err := b.measureReads(ctx, &b.res.rawHot, train, false); err != nil {
		return err
	}
	b.logf("raw hot: %s [%s]", b.res.rawHot, b.res.rawHot.all())
	return nil
}

func (b *bench) figSingleGet(ctx context.Context) error {
	key := fmt.Sprintf("%s/%s/%s", prefix, trainDir, b.spec.folders()[trainDir][0])
	if err := b.warmServer(ctx); err != nil {
		return err
	}
	for range b.cfg.runs {
		var n int64
		d, err := timed(func() (err error) { n, err = b.singleGet(ctx, key); return err })
		if err != nil {
			return err
		}
		b.res.singleGet.add(d, n)
	}
	b.logf("single GET: %s [%s]", b.res.singleGet, b.res.singleGet.all())
	return nil
}

// freshMount mounts s3cachefs on an empty cache dir named name.
func (b *bench) freshMount(ctx context.Context, name string) (*fsMount, error) {
	cache := b.path("tmp", name+"-cache")
	if err := os.RemoveAll(cache); err != nil {
		return nil, err
	}
	return b.mountFS(ctx, name, cache)
}

func (b *bench) figColdOne(ctx context.Context) error {
	for range b.cfg.runs {
		m, err := b.freshMount(ctx, "cold1")
		if err != nil {
			return err
		}
		file := b.trainPaths(m.dir)[0]
		// Listing the folder is not part of the figure: the GET
		// baseline knows its key too.
		if _, err := os.Stat(file); err != nil {
			return err
		}
		if err := b.warmServer(ctx); err != nil {
			return err
		}
		var n int64
		d, err := timed(func() (err error) { n, err = readFile(file); return err })
		if err != nil {
			return err
		}
		b.res.fsColdOne.add(d, n)
		if err := b.dropFS(m, true); err != nil {
			return err
		}
	}
	b.logf("s3cachefs cold one file: %s [%s]", b.res.fsColdOne, b.res.fsColdOne.all())
	return nil
}

func (b *bench) figColdSplit(ctx context.Context) error {
	for range b.cfg.runs {
		m, err := b.freshMount(ctx, "coldsplit")
		if err != nil {
			return err
		}
		if _, err := os.ReadDir(filepath.Join(m.dir, trainDir)); err != nil {
			return err
		}
		if err := b.warmServer(ctx); err != nil {
			return err
		}
		var n int64
		cpu := b.startCPU(m.pid)
		d, err := timed(func() (err error) { n, err = readFiles(ctx, b.trainPaths(m.dir), b.cfg.readers); return err })
		if err != nil {
			return err
		}
		b.res.fsColdSplit.add(d, n)
		b.logf("cold split: %s; %s", fmtDur(d), cpu)
		if err := b.dropFS(m, true); err != nil {
			return err
		}
	}
	b.logf("s3cachefs cold split: %s [%s]", b.res.fsColdSplit, b.res.fsColdSplit.all())
	return nil
}

// figPrefetch times `prefetch train` on empty caches, then reads the
// split cached by the last run: warm (page cache dropped) and hot.
func (b *bench) figPrefetch(ctx context.Context) error {
	var m *fsMount
	for i := range b.cfg.runs {
		var err error
		if m, err = b.freshMount(ctx, "prefetch"); err != nil {
			return err
		}
		if err := b.warmServer(ctx); err != nil {
			return err
		}
		var job time.Duration
		cpu := b.startCPU(m.pid)
		d, err := timed(func() (err error) { job, err = b.prefetch(ctx, m, trainDir); return err })
		if err != nil {
			return err
		}
		b.res.fsPrefetch.add(d, b.spec.bytesOf(trainDir))
		b.logf("prefetch: command %s, job %s; %s", fmtDur(d), fmtDur(job), cpu)
		if i < b.cfg.runs-1 {
			if err := b.dropFS(m, true); err != nil {
				return err
			}
		}
	}
	b.logf("s3cachefs prefetch: %s [%s]", b.res.fsPrefetch, b.res.fsPrefetch.all())
	train := b.trainPaths(m.dir)
	// The disk figures the ratios use are taken here, a sample of each
	// in turn, so both sides see the same machine state; the ones taken
	// at the start only go to the log.
	raw := b.trainPaths(b.path("dataset"))
	b.res.rawWarm, b.res.rawHot = stat{}, stat{}
	cpu := b.startCPU(m.pid)
	if err := b.measurePairs(ctx, b.cfg.runs, true, &b.res.rawWarm, raw, &b.res.fsWarm, train); err != nil {
		return err
	}
	b.logf("s3cachefs warm: %s [%s], disk beside it %s [%s]; %s", b.res.fsWarm, b.res.fsWarm.all(),
		b.res.rawWarm, b.res.rawWarm.all(), cpu)
	// A hot read takes ~0.1 s: take more samples of it.
	cpu = b.startCPU(m.pid)
	if err := b.measurePairs(ctx, 3*b.cfg.runs, false, &b.res.rawHot, raw, &b.res.fsHot, train); err != nil {
		return err
	}
	b.logf("s3cachefs hot: %s [%s], disk beside it %s [%s]; %s", b.res.fsHot, b.res.fsHot.all(),
		b.res.rawHot, b.res.rawHot.all(), cpu)
	st, err := b.fsStatus(ctx, m)
	if err != nil {
		return err
	}
	b.res.readMode = st.ReadMode
	if st.PassthroughOff != "" {
		b.res.readMode += " (" + st.PassthroughOff + ")"
	}
	return b.dropFS(m, true)
}

// measureCopy times copy into a fresh folder runs times.
func (b *bench) measureCopy(ctx context.Context, s *stat, name string, copy func(dest string) error) error {
	dest := b.path("tmp", name)
	for range b.cfg.runs {
		if err := os.RemoveAll(dest); err != nil {
			return err
		}
		if err := b.warmServer(ctx); err != nil {
			return err
		}
		d, err := timed(func() error { return copy(dest) })
		if err != nil {
			return err
		}
		n, err := folderBytes(dest)
		if err != nil {
			return err
		}
		if want := b.spec.bytesOf(trainDir); n != want {
			return fmt.Errorf("%s copied %d bytes, want %d", name, n, want)
		}
		s.add(d, n)
	}
	return os.RemoveAll(dest)
}

func (b *bench) figAwsSync(ctx context.Context) error {
	err := b.measureCopy(ctx, &b.res.awsSync, "awssync", func(dest string) error {
		return b.awsSync(ctx, trainDir, dest)
	})
	b.logf("aws s3 sync: %s [%s]", b.res.awsSync, b.res.awsSync.all())
	return err
}

func (b *bench) figRcloneCopy(ctx context.Context) error {
	err := b.measureCopy(ctx, &b.res.rcCopy, "rclonecopy", func(dest string) error {
		return b.rcloneCopy(ctx, trainDir, dest)
	})
	b.logf("rclone copy: %s [%s]", b.res.rcCopy, b.res.rcCopy.all())
	return err
}

// folderBytes sums the sizes of the files in dir.
func folderBytes(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			return 0, err
		}
		n += info.Size()
	}
	return n, nil
}

// timeLs times one `ls -l dir`.
func (b *bench) timeLs(ctx context.Context, dir string) (time.Duration, error) {
	return timed(func() error { _, err := b.runCmd(ctx, "ls", "-l", dir); return err })
}

// figListing times `ls -l` of meta_train on a fresh cache, counting the
// requests it makes, then again with kernel caches dropped, then stats
// random files of it with kernel caches dropped, counting requests.
func (b *bench) figListing(ctx context.Context) error {
	names := b.spec.folders()[metaTrainDir]
	b.res.statCount = min(1000, len(names))
	rng := rand.New(rand.NewPCG(b.spec.Seed, 1000))
	for range b.cfg.runs {
		m, err := b.freshMount(ctx, "ls")
		if err != nil {
			return err
		}
		dir := filepath.Join(m.dir, metaTrainDir)
		// Looking the folder up lists the root: not part of the figure.
		if _, err := os.Stat(dir); err != nil {
			return err
		}
		b.proxy.Reset()
		d, err := b.timeLs(ctx, dir)
		if err != nil {
			return err
		}
		c := b.proxy.Counts()
		b.res.lsFirst.add(d, 0)
		b.res.lsLists, b.res.lsHeads = max(b.res.lsLists, c.List), max(b.res.lsHeads, c.Head)
		if d, err = b.timeLs(ctx, dir); err != nil {
			return err
		}
		b.res.lsSecond.add(d, 0)
		// Again with the kernel's entries and attributes gone: every
		// name is looked up in the daemon.
		if err := dropCaches(); err != nil {
			return err
		}
		if d, err = b.timeLs(ctx, dir); err != nil {
			return err
		}
		b.res.lsDropped.add(d, 0)
		if err := dropCaches(); err != nil {
			return err
		}
		b.proxy.Reset()
		pick := rng.Perm(len(names))[:b.res.statCount]
		d, err = timed(func() error {
			for _, i := range pick {
				if _, err := os.Stat(filepath.Join(dir, names[i])); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		b.res.statFiles.add(d, 0)
		b.res.statRequests += b.proxy.Counts().Total()
		if err := b.dropFS(m, true); err != nil {
			return err
		}
	}
	b.logf("ls -l first: %s [%s], %d LIST, %d HEAD; second: %s [%s]; caches dropped: %s [%s]; stat: %s, %d requests",
		b.res.lsFirst, b.res.lsFirst.all(), b.res.lsLists, b.res.lsHeads, b.res.lsSecond, b.res.lsSecond.all(),
		b.res.lsDropped, b.res.lsDropped.all(), b.res.statFiles, b.res.statRequests)
	return nil
}

// smallPart and wholeDataset are the two dataset sizes of the RSS figure.
var (
	smallPart    = []string{devDir, metaDevDir}
	wholeDataset = []string{trainDir, devDir, metaTrainDir, metaDevDir}
)

// figRSSRemount prefetches part of the dataset and then all of it, each on
// a fresh daemon, and takes the daemon's peak RSS; then it remounts the
// full cache and reads everything, counting requests.
func (b *bench) figRSSRemount(ctx context.Context) error {
	for _, part := range []struct {
		folders []string
		rss     *int64
	}{{smallPart, &b.res.rssSmall}, {wholeDataset, &b.res.rssLarge}} {
		m, err := b.freshMount(ctx, "rss")
		if err != nil {
			return err
		}
		if _, err := b.prefetch(ctx, m, part.folders...); err != nil {
			return err
		}
		if *part.rss, err = peakRSS(m.pid); err != nil {
			return err
		}
		// Keep the whole dataset's cache for the remount.
		if err := b.dropFS(m, len(part.folders) != len(wholeDataset)); err != nil {
			return err
		}
	}
	b.logf("peak RSS: %d MiB (part), %d MiB (all)", b.res.rssSmall>>20, b.res.rssLarge>>20)
	m, err := b.mountFS(ctx, "remount", b.path("tmp", "rss-cache"))
	if err != nil {
		return err
	}
	b.proxy.Reset()
	if err := dropCaches(); err != nil {
		return err
	}
	// Large and small files are timed apart: their costs differ in kind
	// (bytes against opens).
	var total int64
	var took time.Duration
	for _, part := range []struct {
		folders []string
		s       *stat
	}{{[]string{trainDir, devDir}, &b.res.remountLarge}, {[]string{metaTrainDir, metaDevDir}, &b.res.remountSmall}} {
		var paths []string
		for _, f := range part.folders {
			paths = append(paths, b.spec.paths(m.dir, f)...)
		}
		var n int64
		d, err := timed(func() (err error) { n, err = readFiles(ctx, paths, b.cfg.readers); return err })
		if err != nil {
			return err
		}
		part.s.add(d, n)
		total += n
		took += d
	}
	b.res.remount.add(took, total)
	c := b.proxy.Counts()
	b.res.remountGets, b.res.remountLists = c.GetObject, c.List
	b.logf("remount read: %s (large files %s, small files %s), %d GET, %d LIST", b.res.remount,
		b.res.remountLarge, b.res.remountSmall, c.GetObject, c.List)
	return b.dropFS(m, true)
}

// figRcloneMount reads the train split through `rclone mount
// --vfs-cache-mode full`: cold (empty cache), warm (page cache dropped,
// rclone's disk cache full) and hot.
func (b *bench) figRcloneMount(ctx context.Context) error {
	cache := b.path("tmp", "rclone-cache")
	for range b.cfg.runs {
		if err := os.RemoveAll(cache); err != nil {
			return err
		}
		m, err := b.mountRclone(ctx, "rclone", cache)
		if err != nil {
			return err
		}
		if _, err := os.ReadDir(filepath.Join(m.dir, trainDir)); err != nil {
			return err
		}
		if err := b.warmServer(ctx); err != nil {
			return err
		}
		train := b.trainPaths(m.dir)
		for _, step := range []struct {
			s    *stat
			drop bool
		}{{&b.res.rcCold, false}, {&b.res.rcWarm, true}, {&b.res.rcHot, false}} {
			if err := b.sampleReads(ctx, step.s, train, step.drop); err != nil {
				return err
			}
		}
		if err := m.c.close(); err != nil {
			return err
		}
	}
	b.logf("rclone mount: cold %s [%s], warm %s [%s], hot %s [%s]", b.res.rcCold, b.res.rcCold.all(),
		b.res.rcWarm, b.res.rcWarm.all(), b.res.rcHot, b.res.rcHot.all())
	return os.RemoveAll(cache)
}
