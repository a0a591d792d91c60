// scale_steps.go holds the steps of the scale figure, each on mounts of
// its own.

package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// scaleListing: scandir of big/ first and second time beside `rclone lsf`
// and a local folder; then stats of random names with kernel caches
// dropped, beside the same on the local folder.
func (b *bench) scaleListing(ctx context.Context, sc *scaleFigures) error {
	n := sc.cfg.bigFolder
	local, err := b.localFolder(n)
	if err != nil {
		return err
	}
	m, err := b.scaleMount(ctx, "scale-ls", false, "--metadata-ttl", "1h")
	if err != nil {
		return err
	}
	dir := filepath.Join(m.dir, bigDir)
	// Looking the folder up lists the root: not part of the figure.
	if _, err := os.Stat(dir); err != nil {
		return err
	}
	b.proxy.Reset()
	got, d, done, err := scandirWithin(dir, sc.cfg.lsFor, m.pid)
	c := b.proxy.Counts()
	sc.lsLists, sc.lsHeads, sc.lsEntries = c.List, c.Head, got
	if !done {
		// The daemon was stopped to end the scandir: no mount is left
		// for the rest of the step. rclone lsf still runs.
		b.logf("scandir %s: %d of %d entries after %s; daemon stopped", bigDir, got, n, fmtDur(d))
		sc.lsUnfinished = d
		if err := b.scaleDrop(sc, m, true); err != nil {
			b.logf("drop after the stopped daemon: %v", err)
		}
		return b.scaleLsf(ctx, sc)
	}
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("scandir %s: %d entries, want %d", dir, got, n)
	}
	sc.lsFirst.add(d, 0)
	b.logf("scandir %s first: %s, %d LIST, %d HEAD", bigDir, sc.lsFirst, c.List, c.Head)
	for range b.cfg.runs {
		if err := timedScandir(&sc.lsSecond, dir, n); err != nil {
			return err
		}
		if err := timedScandir(&sc.lsLocal, local, n); err != nil {
			return err
		}
	}
	b.logf("scandir second: %s [%s]; local folder: %s [%s]", sc.lsSecond, sc.lsSecond.all(), sc.lsLocal, sc.lsLocal.all())
	// Beside small/'s in scaleRSS: the peak after listing, before stats.
	if sc.rssBig, err = peakRSS(m.pid); err != nil {
		return err
	}
	if sc.rssBigParts, err = rssParts(m.pid); err != nil {
		return err
	}
	sc.rssBigKeys = n
	names := randomNames(n, 1000, 7)
	b.proxy.Reset()
	if sc.statFS, sc.statFSN, err = timeStats(dir, names, sc.cfg.statFor); err != nil {
		return err
	}
	sc.statRequests = b.proxy.Counts().Total()
	if sc.statLocal, sc.statLocalN, err = timeStats(local, names, sc.cfg.statFor); err != nil {
		return err
	}
	b.logf("stat: mount %s each (%d done, %d requests), local %s each (%d done)",
		fmtDur(sc.statFS), sc.statFSN, sc.statRequests, fmtDur(sc.statLocal), sc.statLocalN)
	if err := b.scaleDrop(sc, m, true); err != nil {
		return err
	}
	return b.scaleLsf(ctx, sc)
}

// scandirWithin scandirs dir; when that takes longer than limit, it stops
// the daemon (SIGTERM: it unmounts, and the kernel ends the scandir) and
// reports done false with the entries read so far.
func scandirWithin(dir string, limit time.Duration, daemon int) (n int, d time.Duration, done bool, err error) {
	type result struct {
		n   int
		err error
	}
	ch := make(chan result, 1)
	start := time.Now()
	go func() {
		n, err := scandir(dir)
		ch <- result{n, err}
	}()
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.n, time.Since(start), true, r.err
	case <-t.C:
	}
	if err := syscall.Kill(daemon, syscall.SIGTERM); err != nil {
		return 0, 0, false, fmt.Errorf("stop daemon %d: %w", daemon, err)
	}
	r := <-ch
	return r.n, time.Since(start), false, nil
}

// scaleLsf times `rclone lsf` of big/.
func (b *bench) scaleLsf(ctx context.Context, sc *scaleFigures) error {
	n := sc.cfg.bigFolder
	// One run: a listing of this size takes long enough to be steady.
	{
		b.proxy.Reset()
		var out string
		d, err := timed(func() (err error) {
			out, err = b.runCmdEnv(ctx, b.rcloneEnv(), rclone, "lsf", b.scaleRclonePath(bigDir))
			return err
		})
		if err != nil {
			return err
		}
		if got := strings.Count(out, "\n"); got != n {
			return fmt.Errorf("rclone lsf listed %d names, want %d", got, n)
		}
		sc.rcLsf.add(d, 0)
		sc.rcLists = max(sc.rcLists, b.proxy.Counts().List)
	}
	b.logf("rclone lsf: %s [%s], %d LIST", sc.rcLsf, sc.rcLsf.all(), sc.rcLists)
	return nil
}

// scaleRclonePath is folder of the synthetic bucket as an rclone path.
func (b *bench) scaleRclonePath(folder string) string {
	return fmt.Sprintf("%s:%s/%s/%s", rcloneRemote, synthBucket, synthRoot, folder)
}

// scaleRSS lists small/ on a fresh daemon and takes its peak RSS, to set
// beside the one after big/ (or huge/, when asked for).
func (b *bench) scaleRSS(ctx context.Context, sc *scaleFigures) error {
	type folder struct {
		dir   string
		keys  int
		rss   *int64
		parts *rssSplit
	}
	folders := []folder{{smallDir, sc.cfg.smallFolder, &sc.rssSmall, &sc.rssSmallParts}}
	if sc.cfg.hugeFolder > 0 {
		sc.rssBigKeys = sc.cfg.hugeFolder
		folders = append(folders, folder{hugeDir, sc.cfg.hugeFolder, &sc.rssBig, &sc.rssBigParts})
	}
	for _, f := range folders {
		m, err := b.scaleMount(ctx, "scale-rss", false, "--metadata-ttl", "1h")
		if err != nil {
			return err
		}
		var s stat
		if err := timedScandir(&s, filepath.Join(m.dir, f.dir), f.keys); err != nil {
			return err
		}
		if *f.rss, err = peakRSS(m.pid); err != nil {
			return err
		}
		if *f.parts, err = rssParts(m.pid); err != nil {
			return err
		}
		b.logf("scandir of %d keys: %s, daemon VmHWM %d MiB (now %s)", f.keys, s, *f.rss>>20, *f.parts)
		if err := b.scaleDrop(sc, m, true); err != nil {
			return err
		}
	}
	return nil
}

// scaleImageFolder scandirs every folder of img/ and stats every file, as
// torchvision's ImageFolder indexing does (4 folders at a time), then
// takes the daemon's RSS.
func (b *bench) scaleImageFolder(ctx context.Context, sc *scaleFigures) error {
	m, err := b.scaleMount(ctx, "scale-img", false, "--metadata-ttl", "1h")
	if err != nil {
		return err
	}
	root := filepath.Join(m.dir, imgDir)
	var mu sync.Mutex
	files := 0
	d, err := timed(func() error {
		g, ctx := errgroup.WithContext(ctx)
		g.SetLimit(4)
		for i := range sc.cfg.imgFolders {
			g.Go(func() error {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				dir := filepath.Join(root, fmt.Sprintf("n%05d", i))
				es, err := os.ReadDir(dir)
				if err != nil {
					return err
				}
				for _, e := range es {
					if _, err := os.Lstat(filepath.Join(dir, e.Name())); err != nil {
						return err
					}
				}
				mu.Lock()
				files += len(es)
				mu.Unlock()
				return nil
			})
		}
		return g.Wait()
	})
	if err != nil {
		return err
	}
	if want := sc.cfg.imgFolders * sc.cfg.imgFiles; files != want {
		return fmt.Errorf("ImageFolder scan stat'ed %d files, want %d", files, want)
	}
	sc.imgScan.add(d, 0)
	sc.imgFiles = files
	if sc.imgRSS, err = currentRSS(m.pid); err != nil {
		return err
	}
	b.logf("ImageFolder scan of %d files: %s, daemon VmRSS %d MiB", files, sc.imgScan, sc.imgRSS>>20)
	return b.scaleDrop(sc, m, true)
}

// coldPaths are cfg.reads random files of cold/ under root, seeded.
func (sc *scaleFigures) coldPaths(root string) []string {
	rng := rand.New(rand.NewPCG(5, 13))
	out := make([]string, min(sc.cfg.reads, 100_000))
	for i, j := range rng.Perm(100_000)[:len(out)] {
		out[i] = filepath.Join(root, coldDir, fmt.Sprintf("c%05d", j/1000), fmt.Sprintf("%07d.JPEG", j%1000))
	}
	return out
}

// listColdFolders reads every folder of cold/ under root, so that the
// reads that follow time reading, not listing.
func listColdFolders(root string) error {
	for i := range 100 {
		if _, err := os.ReadDir(filepath.Join(root, coldDir, fmt.Sprintf("c%05d", i))); err != nil {
			return err
		}
	}
	return nil
}

// scaleColdReads reads random 110 KB files with 64 readers through a
// fresh s3cachefs mount and a fresh `rclone mount --vfs-cache-mode full`.
func (b *bench) scaleColdReads(ctx context.Context, sc *scaleFigures) error {
	want := int64(min(sc.cfg.reads, 100_000)) * smallFile
	{ // one run of each: thousands of files make a steady figure
		m, err := b.scaleMount(ctx, "scale-cold", false)
		if err != nil {
			return err
		}
		if err := b.timeColdReads(ctx, &sc.coldFS, sc, m.dir, want); err != nil {
			return err
		}
		if err := b.scaleDrop(sc, m, true); err != nil {
			return err
		}
		cache := b.path("tmp", "scale-rclone-cache")
		if err := os.RemoveAll(cache); err != nil {
			return err
		}
		rm, err := b.mountRcloneAt(ctx, "scale-rclone", cache, fmt.Sprintf("%s:%s/%s", rcloneRemote, synthBucket, synthRoot))
		if err != nil {
			return err
		}
		if err := b.timeColdReads(ctx, &sc.coldRclone, sc, rm.dir, want); err != nil {
			return err
		}
		if err := rm.c.close(); err != nil {
			return err
		}
		if err := os.RemoveAll(cache); err != nil {
			return err
		}
	}
	b.logf("cold reads: s3cachefs %s [%s], rclone mount %s [%s]", sc.coldFS, sc.coldFS.all(), sc.coldRclone, sc.coldRclone.all())
	return nil
}

func (b *bench) timeColdReads(ctx context.Context, s *stat, sc *scaleFigures, root string, want int64) error {
	if err := listColdFolders(root); err != nil {
		return err
	}
	var n int64
	d, err := timed(func() (err error) { n, err = readFiles(ctx, sc.coldPaths(root), sc.cfg.readers); return err })
	if err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("cold reads of %s read %d bytes, want %d", root, n, want)
	}
	s.add(d, n)
	return nil
}

// scalePrefetch prefetches pf/ on an empty cache, counting index commits
// and cache syncs, beside `rclone copy --transfers 32` of it.
func (b *bench) scalePrefetch(ctx context.Context, sc *scaleFigures) error {
	want := int64(sc.cfg.prefetch) * smallFile
	m, err := b.scaleMount(ctx, "scale-pf", false)
	if err != nil {
		return err
	}
	before, err := b.fsStatus(ctx, m)
	if err != nil {
		return err
	}
	var job time.Duration
	d, err := timed(func() (err error) { job, err = b.prefetch(ctx, m, pfDir); return err })
	if err != nil {
		return err
	}
	sc.prefetch.add(d, want)
	after, err := b.fsStatus(ctx, m)
	if err != nil {
		return err
	}
	sc.commits = after.IndexCommits - before.IndexCommits
	sc.syncs = after.CacheSyncs - before.CacheSyncs
	sc.fetched = int64(after.Objects)
	if sc.prefetchRSS, err = peakRSS(m.pid); err != nil {
		return err
	}
	b.logf("prefetch of %d files: %s (job %s), %d index commits, %d cache syncs, %d objects, VmHWM %d MiB",
		sc.cfg.prefetch, sc.prefetch, fmtDur(job), sc.commits, sc.syncs, sc.fetched, sc.prefetchRSS>>20)
	if err := b.scaleDrop(sc, m, true); err != nil {
		return err
	}
	dest := b.path("tmp", "scale-rclone-copy")
	if err := os.RemoveAll(dest); err != nil {
		return err
	}
	d, err = timed(func() error {
		_, err := b.runCmdEnv(ctx, b.rcloneEnv(), rclone, "copy", "--transfers", "32", b.scaleRclonePath(pfDir), dest)
		return err
	})
	if err != nil {
		return err
	}
	n, err := treeBytes(dest)
	if err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("rclone copy copied %d bytes, want %d", n, want)
	}
	sc.rcCopy.add(d, n)
	b.logf("rclone copy --transfers 32: %s", sc.rcCopy)
	return os.RemoveAll(dest)
}

// treeBytes sums the sizes of the files under dir.
func treeBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	return n, err
}

// scaleExpiry stats a name of small/ on a mount with a short TTL: the
// first stat of the fresh mount waits for the whole LIST; the first stat
// after the listing expired should not.
func (b *bench) scaleExpiry(ctx context.Context, sc *scaleFigures) error {
	m, err := b.scaleMount(ctx, "scale-ttl", false, "--metadata-ttl", sc.cfg.ttl.String())
	if err != nil {
		return err
	}
	dir := filepath.Join(m.dir, smallDir)
	names := randomNames(sc.cfg.smallFolder, 2, 3)
	// The listing is dated when S3 is asked, before the first stat waits
	// for it: its age counts from here.
	asked := time.Now()
	if sc.listTime, err = timed(func() error { _, err := os.Lstat(filepath.Join(dir, names[0])); return err }); err != nil {
		return err
	}
	// Waiting out the TTL is the condition measured, not a stand-in for
	// synchronisation; the kernel's cached entries go too. A second past
	// the TTL is within the stale bound (one further TTL) however long
	// the LIST took.
	time.Sleep(time.Until(asked.Add(sc.cfg.ttl + time.Second)))
	if err := dropCaches(); err != nil {
		return err
	}
	b.proxy.Reset()
	if sc.expiredStat, err = timed(func() error { _, err := os.Lstat(filepath.Join(dir, names[1])); return err }); err != nil {
		return err
	}
	sc.expiredLists = b.proxy.Counts().List
	// Stale-while-revalidate still refreshes: watch for the re-list for
	// a while (a few LIST times) after the stat was answered.
	deadline := time.Now().Add(3*sc.listTime + 5*time.Second)
	for b.proxy.Counts().List == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	sc.refreshLists = b.proxy.Counts().List
	b.logf("stat: fresh mount %s (the LIST), after expiry %s (%d LIST requests meanwhile, %d by %s after)",
		fmtDur(sc.listTime), fmtDur(sc.expiredStat), sc.expiredLists, sc.refreshLists, (3*sc.listTime + 5*time.Second).Round(time.Second))
	return b.scaleDrop(sc, m, true)
}

// scaleCached caches many tiny objects with a prefetch (for at most
// cfg.cacheFor), then measures status and /metrics, the startup of a
// remount on that cache, and reads that fill the cache while it is full
// (beside the same on an empty cache) with a cached file opened meanwhile.
func (b *bench) scaleCached(ctx context.Context, sc *scaleFigures) error {
	m, err := b.scaleMount(ctx, "scale-tiny", false)
	if err != nil {
		return err
	}
	if err := b.cacheTiny(ctx, sc, m); err != nil {
		return err
	}
	if err := b.dropFS(m, false); err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	// The remount: startup with the cache, then status and metrics; a
	// limit just above what is cached keeps the cache full.
	limit := sc.usedBytes + 64<<20
	d, err := timed(func() (err error) {
		m, err = b.scaleMount(ctx, "scale-tiny", true, "--metrics-addr", addr, "--max-cache-size", fmt.Sprint(limit))
		return err
	})
	if err != nil {
		return err
	}
	sc.startup.add(d, 0)
	for range max(b.cfg.runs, 5) {
		d, err := timed(func() error { _, err := b.runCmd(ctx, m.bin, "status", "--mount", m.dir, "--json"); return err })
		if err != nil {
			return err
		}
		sc.statusTime.add(d, 0)
		if d, err = timed(func() error { return getMetrics(ctx, addr) }); err != nil {
			return err
		}
		sc.metricsTime.add(d, 0)
	}
	b.logf("%d cached objects: startup %s, status %s [%s], /metrics %s [%s]", sc.cachedObjects, sc.startup,
		sc.statusTime, sc.statusTime.all(), sc.metricsTime, sc.metricsTime.all())
	cached := filepath.Join(m.dir, tinyDir, "t00000", "0000000")
	if sc.openP99, sc.opens, err = b.fillWhileOpening(ctx, &sc.fillFull, m.dir, cached); err != nil {
		return err
	}
	if err := b.scaleDrop(sc, m, true); err != nil {
		return err
	}
	e, err := b.scaleMount(ctx, "scale-fill", false)
	if err != nil {
		return err
	}
	if _, _, err := b.fillWhileOpening(ctx, &sc.fillEmpty, e.dir, ""); err != nil {
		return err
	}
	b.logf("fill with 8 readers: cache full %s, empty %s; p99 open of a cached file meanwhile %s (%d opens)",
		sc.fillFull, sc.fillEmpty, fmtDur(sc.openP99), sc.opens)
	return b.scaleDrop(sc, e, true)
}

// cacheTiny prefetches tiny/ for at most cfg.cacheFor (cancelling the job
// then), unpins it so that eviction may take it, and notes how many
// objects are cached.
func (b *bench) cacheTiny(ctx context.Context, sc *scaleFigures, m *fsMount) error {
	start := time.Now()
	if _, err := b.runCmd(ctx, m.bin, "prefetch", "--mount", m.dir, "--detach", "--json", tinyDir); err != nil {
		return err
	}
	var st fsStatus
	var err error
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
		if st, err = b.fsStatus(ctx, m); err != nil {
			return err
		}
		running := slices.ContainsFunc(st.Prefetch, func(j jobStatus) bool { return j.State == "running" })
		if running && time.Since(start) > sc.cfg.cacheFor {
			for _, j := range st.Prefetch {
				if j.State == "running" {
					if _, err := b.runCmd(ctx, m.bin, "prefetch", "--mount", m.dir, "--cancel", j.ID); err != nil {
						return err
					}
				}
			}
			sc.notes = append(sc.notes, fmt.Sprintf("the prefetch caching %d tiny objects was cancelled after %s (-scale-cache-for)", sc.cfg.cached, sc.cfg.cacheFor))
			running = false
		}
		if !running {
			break
		}
	}
	if _, err := b.runCmd(ctx, m.bin, "prefetch", "--mount", m.dir, "--unpin", tinyDir); err != nil {
		return err
	}
	if st, err = b.fsStatus(ctx, m); err != nil {
		return err
	}
	sc.cachedObjects = st.CompleteObjects
	sc.usedBytes = st.UsedBytes
	sc.cacheRate = float64(st.CompleteObjects) / time.Since(start).Seconds()
	b.logf("cached %d tiny objects in %s (%.0f objects/s)", st.CompleteObjects, time.Since(start).Round(time.Second), sc.cacheRate)
	return nil
}

// fillWhileOpening reads fill/ with 8 readers into s; meanwhile, when
// cached is set, it opens and reads that file in a loop and returns the
// p99 of those opens.
func (b *bench) fillWhileOpening(ctx context.Context, s *stat, root, cached string) (time.Duration, int, error) {
	var paths []string
	for i := range b.cfg.scale.fill {
		paths = append(paths, filepath.Join(root, fillDir, fmt.Sprintf("%06d.bin", i)))
	}
	if _, err := os.ReadDir(filepath.Join(root, fillDir)); err != nil {
		return 0, 0, err
	}
	stop := make(chan struct{})
	var lat []time.Duration
	var probeErr error
	var wg sync.WaitGroup
	if cached != "" {
		if _, err := readFile(cached); err != nil { // cached and listed
			return 0, 0, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				d, err := timed(func() error { _, err := readFile(cached); return err })
				if err != nil {
					probeErr = err
					return
				}
				lat = append(lat, d)
			}
		}()
	}
	var n int64
	d, err := timed(func() (err error) { n, err = readFiles(ctx, paths, 8); return err })
	close(stop)
	wg.Wait()
	if err != nil {
		return 0, 0, err
	}
	if probeErr != nil {
		return 0, 0, fmt.Errorf("open of a cached file: %w", probeErr)
	}
	s.add(d, n)
	if len(lat) == 0 {
		return 0, 0, nil
	}
	slices.Sort(lat)
	return lat[len(lat)*99/100], len(lat), nil
}

// freeAddr is a free 127.0.0.1 port for --metrics-addr.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// getMetrics scrapes http://addr/metrics once.
func getMetrics(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return nil
}

// rssSplit is a daemon's resident memory now, by kind.
type rssSplit struct {
	anon, file int64 // RssAnon (heap, stacks) and RssFile (mapped files: the index, the binary)
}

func (r rssSplit) String() string {
	return fmt.Sprintf("%s anonymous, %s mapped files", mibOf(r.anon), mibOf(r.file))
}

// rssParts reads RssAnon and RssFile of pid.
func rssParts(pid int) (rssSplit, error) {
	anon, err := procStatusKB(pid, "RssAnon:")
	if err != nil {
		return rssSplit{}, err
	}
	file, err := procStatusKB(pid, "RssFile:")
	return rssSplit{anon: anon, file: file}, err
}

// currentRSS is VmRSS of pid: its resident memory now.
func currentRSS(pid int) (int64, error) {
	return procStatusKB(pid, "VmRSS:")
}
