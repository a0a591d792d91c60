// shared.go is the shared figure (issue 14): three daemons on this
// machine, each with its own cache dir and mountpoint, sharing one folder
// tier (--shared-cache), the origin S3 behind the usual proxy.

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"s3cachefs/test/s3server"
	"s3cachefs/test/tiertest"
)

// sharedFigures is what the shared figure measured.
type sharedFigures struct {
	split int64 // bytes of the train split
	// prefetch train: one node without a tier, and three nodes at once
	// without one, each fetching all of it from S3 (what the tier saves
	// on this one machine, whose disk and CPUs the three share), with
	// the daemons' CPU time summed over the runs.
	alone, threeAlone stat
	threeAloneCPU     time.Duration
	// A read of train on a node with an empty cache from S3, no tier.
	fromS3 stat
	// By tier kind: folder, then bucket.
	kinds []*tierFigures
	// A poisoned entry (a byte flipped, its block's CRC-32C rewritten to
	// match): entries refused, and whether the file read was right.
	poisonRefused int64
	poisonRight   bool
	// A node killed (SIGKILL) while it held claims; the two others
	// prefetch train: their wall time, S3 bytes in all, claims held.
	killed      stat
	killedBytes int64
	killedHeld  int
	// prefetch train with the tier's folder gone: time and S3 bytes.
	down      stat
	downBytes int64
}

func (b *bench) figShared(ctx context.Context) error {
	f := &sharedFigures{split: b.spec.bytesOf(trainDir)}
	b.res.shared = f
	if err := b.tierKinds(f); err != nil {
		return err
	}
	for range b.cfg.runs {
		if err := b.sharedAlone(ctx, f); err != nil {
			return err
		}
		if err := b.sharedDown(ctx, f); err != nil {
			return err
		}
		for _, k := range f.kinds {
			if err := b.sharedThree(ctx, f, k); err != nil {
				return err
			}
		}
		if err := b.sharedThreeAlone(ctx, f); err != nil {
			return err
		}
	}
	b.logf("shared: prefetch alone %s [%s]; three without a tier %s [%s]", f.alone, f.alone.all(), f.threeAlone, f.threeAlone.all())
	for _, k := range f.kinds {
		b.logf("shared: %s tier, three nodes %s [%s], S3 bytes %v of %d", k.name, k.three, k.three.all(), k.bytes, f.split)
	}
	for range b.cfg.runs {
		for _, k := range f.kinds {
			if err := b.sharedRead(ctx, &k.read, &k.gets, k.flags()...); err != nil {
				return err
			}
		}
		var gets int64 // from S3 itself: not a figure
		if err := b.sharedRead(ctx, &f.fromS3, &gets); err != nil {
			return err
		}
	}
	for _, k := range f.kinds {
		b.logf("shared: read from the %s tier %s [%s] (%d GETs)", k.name, k.read, k.read.all(), k.gets)
	}
	b.logf("shared: read from S3 %s [%s]", f.fromS3, f.fromS3.all())
	if err := b.sharedPoison(ctx, f, b.path("tmp", "shared-tier")); err != nil {
		return err
	}
	if err := b.sharedKilled(ctx, f); err != nil {
		return err
	}
	b.logf("shared: poisoned entry refused %d, file right %v; killed node (%d claims): %s, S3 bytes %d; tier gone: %s, S3 bytes %d",
		f.poisonRefused, f.poisonRight, f.killedHeld, f.killed, f.killedBytes, f.down, f.downBytes)
	return os.RemoveAll(b.path("tmp", "shared-tier"))
}

// tierFigures is what the shared figure measured of one kind of tier.
type tierFigures struct {
	name  string                          // "folder" or "bucket"
	fresh func(ctx context.Context) error // empties the tier
	flags func() []string                 // mount flags that name it
	three stat                            // 3 nodes prefetch train at once (wall time to the last)
	bytes []int64                         // S3 bytes of each such run
	cpu   time.Duration                   // the daemons' CPU time over those runs
	read  stat                            // a node with an empty cache reads train from the tier
	gets  int64                           // data GETs of those reads
}

// tierKinds are the tiers the figure measures: a folder on this disk,
// and a bucket on a second versitygw (the same keys; no proxy: the tier is
// near).
func (b *bench) tierKinds(f *sharedFigures) error {
	folder := b.path("tmp", "shared-tier")
	f.kinds = append(f.kinds, &tierFigures{name: "folder",
		fresh: func(context.Context) error { return freshTier(folder) },
		flags: func() []string { return []string{"--shared-cache", folder} },
	})
	root := b.path("tmp", "shared-tier-s3root")
	if err := freshTier(root); err != nil {
		return err
	}
	srv, err := s3server.StartServer(s3server.Options{
		Dir: root, Log: b.path("logs", "versitygw-tier.log"),
		AccessKey: accessKey, SecretKey: secretKey, Region: region,
	})
	if err != nil {
		return err
	}
	b.clean.add("versitygw (tier)", srv.Close)
	n, name := 0, ""
	f.kinds = append(f.kinds, &tierFigures{name: "bucket",
		fresh: func(ctx context.Context) error {
			n++
			name = fmt.Sprintf("tier%d", n)
			return srv.MakeBucket(ctx, name)
		},
		flags: func() []string {
			return []string{"--shared-cache", "s3://" + name + "/near", "--shared-endpoint-url", srv.Endpoint, "--shared-force-path-style"}
		},
	})
	return nil
}

// freshTier empties the tier folder at dir.
func freshTier(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o755)
}

// sharedNodes mounts n nodes with empty caches on the tier at dir.
func (b *bench) sharedNodes(ctx context.Context, name string, n int, flags ...string) ([]*fsMount, error) {
	var ms []*fsMount
	for i := range n {
		cache := b.path("tmp", fmt.Sprintf("%s%d-cache", name, i))
		if err := os.RemoveAll(cache); err != nil {
			return nil, err
		}
		m, err := b.mountBin(ctx, b.bin, fmt.Sprintf("%s%d", name, i), cache, flags...)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// dropAll unmounts ms, deleting their caches.
func (b *bench) dropAll(ms []*fsMount) error {
	var errs []error
	for _, m := range ms {
		errs = append(errs, b.dropFS(m, true))
	}
	return errors.Join(errs...)
}

// prefetchAll runs `prefetch train` on every node at once and returns the
// wall time until the last one ended; cpu, if set, gets the daemons' CPU
// time meanwhile added.
func (b *bench) prefetchAll(ctx context.Context, ms []*fsMount, cpu *time.Duration) (time.Duration, error) {
	errs := make([]error, len(ms))
	// What earlier figures left to write back is not this one's to wait
	// for.
	unix.Sync()
	var before time.Duration
	for _, m := range ms {
		before += cpuTime(m.pid)
	}
	d, err := timed(func() error {
		var wg sync.WaitGroup
		for i, m := range ms {
			wg.Go(func() { _, errs[i] = b.prefetch(ctx, m, trainDir) })
		}
		wg.Wait()
		return errors.Join(errs...)
	})
	if cpu != nil {
		for _, m := range ms {
			*cpu += cpuTime(m.pid)
		}
		*cpu -= before
	}
	return d, err
}

// timedPrefetch runs `prefetch train` on the nodes ms at once
// (prefetchAll) with S3 warm, adds the wall time to s (and the daemons' CPU
// time to cpu, if set), and returns the bytes S3 sent meanwhile.
func (b *bench) timedPrefetch(ctx context.Context, f *sharedFigures, ms []*fsMount, s *stat, cpu *time.Duration) (int64, error) {
	if err := b.warmServer(ctx); err != nil {
		return 0, err
	}
	b.proxy.Reset()
	d, err := b.prefetchAll(ctx, ms, cpu)
	if err != nil {
		return 0, err
	}
	s.add(d, f.split)
	return b.proxy.Counts().GetBytes, nil
}

// sharedAlone times `prefetch train` on one node without a tier.
func (b *bench) sharedAlone(ctx context.Context, f *sharedFigures) error {
	ms, err := b.sharedNodes(ctx, "shared-alone", 1)
	if err != nil {
		return err
	}
	_, err = b.timedPrefetch(ctx, f, ms, &f.alone, nil)
	return errors.Join(err, b.dropAll(ms))
}

// sharedThreeAlone times `prefetch train` on three nodes at once without
// a tier.
func (b *bench) sharedThreeAlone(ctx context.Context, f *sharedFigures) error {
	ms, err := b.sharedNodes(ctx, "shared-solo", 3)
	if err != nil {
		return err
	}
	_, err = b.timedPrefetch(ctx, f, ms, &f.threeAlone, &f.threeAloneCPU)
	return errors.Join(err, b.dropAll(ms))
}

// sharedThree times `prefetch train` on three nodes at once sharing a
// fresh tier of kind k, and checks that each ends with all of it.
func (b *bench) sharedThree(ctx context.Context, f *sharedFigures, k *tierFigures) error {
	if err := k.fresh(ctx); err != nil {
		return err
	}
	ms, err := b.sharedNodes(ctx, "shared-node", 3, k.flags()...)
	if err != nil {
		return err
	}
	n, err := b.timedPrefetch(ctx, f, ms, &k.three, &k.cpu)
	if err != nil {
		return errors.Join(err, b.dropAll(ms))
	}
	k.bytes = append(k.bytes, n)
	for i, m := range ms {
		st, err := b.fsStatus(ctx, m)
		if err == nil && st.BytesFromS3+st.TierBytes != f.split {
			err = fmt.Errorf("%s tier: node %d ended with %d bytes from S3 and %d from the tier, not the split's %d", k.name, i, st.BytesFromS3, st.TierBytes, f.split)
		}
		if err != nil {
			return errors.Join(err, b.dropAll(ms))
		}
	}
	return b.dropAll(ms)
}

// sharedRead times a read of train, page cache dropped, on a node with an
// empty cache mounted with flags (a tier three nodes filled, or none), and
// adds the data GETs meanwhile to gets.
func (b *bench) sharedRead(ctx context.Context, s *stat, gets *int64, flags ...string) error {
	ms, err := b.sharedNodes(ctx, "shared-read", 1, flags...)
	if err != nil {
		return err
	}
	if err := b.warmServer(ctx); err != nil {
		return errors.Join(err, b.dropAll(ms))
	}
	b.proxy.Reset()
	err = b.sampleReads(ctx, s, b.trainPaths(ms[0].dir), true)
	*gets += b.proxy.Counts().GetObject
	return errors.Join(err, b.dropAll(ms))
}

// sharedPoison forges one entry of the tier (a byte flipped and its
// block's CRC-32C in the trailer rewritten to match, so that only the
// ETag check can tell) and reads its file on a fresh node.
func (b *bench) sharedPoison(ctx context.Context, f *sharedFigures, tier string) error {
	want, err := os.ReadFile(b.trainPaths(b.path("dataset"))[0])
	if err != nil {
		return err
	}
	entries, err := filepath.Glob(filepath.Join(tier, "s3cachefs-tier-v1", "objects", "*", "*"))
	if err != nil {
		return err
	}
	forged := false
	for _, e := range entries {
		if ok, err := forgeEntry(e, want); err != nil {
			return err
		} else if ok {
			forged = true
			break
		}
	}
	if !forged {
		return fmt.Errorf("no tier entry of %s among %d", b.trainPaths("")[0], len(entries))
	}
	ms, err := b.sharedNodes(ctx, "shared-poison", 1, "--shared-cache", tier)
	if err != nil {
		return err
	}
	got, err := os.ReadFile(b.trainPaths(ms[0].dir)[0])
	if err != nil {
		return err
	}
	st, err := b.fsStatus(ctx, ms[0])
	if err != nil {
		return err
	}
	f.poisonRefused, f.poisonRight = st.TierRejected, bytes.Equal(got, want)
	return b.dropAll(ms)
}

// forgeEntry forges the tier entry at path if it holds want
// (tiertest.Forge), as someone who can write the tier could.
func forgeEntry(path string, want []byte) (bool, error) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < len(want) || !bytes.Equal(b[:len(want)], want) {
		return false, err
	}
	forged, err := tiertest.Forge(b)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return true, os.WriteFile(path, forged, 0o664)
}

// sharedKilled kills a node (SIGKILL) once it holds claims in a fresh
// tier, then times `prefetch train` on two others.
func (b *bench) sharedKilled(ctx context.Context, f *sharedFigures) error {
	tier := b.path("tmp", "shared-tier-killed")
	if err := freshTier(tier); err != nil {
		return err
	}
	defer os.RemoveAll(tier)
	flags := []string{"--shared-cache", tier, "--shared-claim-ttl", "5s"}
	ms, err := b.sharedNodes(ctx, "shared-killed", 3, flags...)
	if err != nil {
		return err
	}
	if err := b.warmServer(ctx); err != nil {
		return err
	}
	b.proxy.Reset()
	if _, err := b.runCmd(ctx, ms[0].bin, "prefetch", "--mount", ms[0].dir, "--detach", trainDir); err != nil {
		return err
	}
	claims := filepath.Join(tier, "s3cachefs-tier-v1", "claims", "*")
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for f.killedHeld == 0 {
		held, _ := filepath.Glob(claims)
		f.killedHeld = len(held)
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := syscall.Kill(ms[0].pid, syscall.SIGKILL); err != nil {
		return err
	}
	d, err := b.prefetchAll(ctx, ms[1:], nil)
	if err != nil {
		return err
	}
	f.killed.add(d, f.split)
	f.killedBytes = b.proxy.Counts().GetBytes
	return b.dropAll(ms)
}

// sharedDown times `prefetch train` with the tier's folder removed after
// the mount.
func (b *bench) sharedDown(ctx context.Context, f *sharedFigures) error {
	tier := b.path("tmp", "shared-tier-gone")
	if err := freshTier(tier); err != nil {
		return err
	}
	ms, err := b.sharedNodes(ctx, "shared-down", 1, "--shared-cache", tier)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(tier); err != nil {
		return errors.Join(err, b.dropAll(ms))
	}
	f.downBytes, err = b.timedPrefetch(ctx, f, ms, &f.down, nil)
	return errors.Join(err, b.dropAll(ms))
}

// sharedRows are the rows of the shared figure.
func (b *bench) sharedRows() []row {
	f := b.res.shared
	if f == nil || len(f.kinds) == 0 || f.kinds[0].three.empty() {
		return nil
	}
	split := fmt.Sprintf("`train` (%d × %d MiB)", b.spec.Train, b.spec.FileSize/mib)
	perRun := func(d time.Duration, s stat) float64 { return d.Seconds() / float64(max(1, len(s.samples))) }
	var rows []row
	for _, k := range f.kinds {
		worst := slices.Max(k.bytes)
		bytesRatio := float64(worst) / float64(f.split)
		wall := float64(k.three.median()) / float64(f.alone.median())
		what := fmt.Sprintf("3 nodes sharing a %s tier run `prefetch %s` at once", k.name, trainDir)
		rows = append(rows,
			row{what + ": S3 bytes (most of any run)", fmt.Sprintf("%d MiB", worst/mib), fmt.Sprintf("the split: %d MiB", f.split/mib),
				fmtRatio(bytesRatio), "≤ 1.05× the split", yesNo(bytesRatio <= 1.05)},
			row{what + ": wall time to the last", k.three.String(), "one node alone, no tier: " + f.alone.String(),
				fmtRatio(wall), "≤ 1.2× one node", yesNo(wall <= 1.2)},
			row{what + ", on this one machine: against 3 nodes without a tier (each from S3)",
				fmt.Sprintf("%s; daemons' CPU %.1f s per run", k.three, perRun(k.cpu, k.three)),
				fmt.Sprintf("3 nodes, no tier: %s; daemons' CPU %.1f s per run", f.threeAlone, perRun(f.threeAloneCPU, f.threeAlone)),
				fmtRatio(speedup(k.three, f.threeAlone)), "(for comparison: speedup)", "—"},
			row{fmt.Sprintf("a node with an empty cache reads %s from the %s tier (page cache dropped)", split, k.name),
				fmt.Sprintf("%s; %d GETs", k.read, k.gets), "from S3, no tier: " + f.fromS3.String(),
				fmtRatio(faster(k.read, f.fromS3)), "0 GETs, ≥ 0.8× S3 cold", yesNo(k.gets == 0 && faster(k.read, f.fromS3) >= 0.8)})
	}
	rows = append(rows, row{"a poisoned folder tier entry (a byte flipped, its CRC-32C rewritten to match)",
		fmt.Sprintf("%d refused; file read right: %v", f.poisonRefused, f.poisonRight), "—", "—", "never served", yesNo(f.poisonRefused == 1 && f.poisonRight)})
	if !f.killed.empty() {
		r := float64(f.killedBytes) / float64(f.split)
		rows = append(rows, row{fmt.Sprintf("a node killed (SIGKILL) holding %d claims in a folder tier (TTL 5s); 2 others `prefetch %s`", f.killedHeld, trainDir),
			fmt.Sprintf("%s; S3 bytes %d MiB", f.killed, f.killedBytes/mib), fmt.Sprintf("the split: %d MiB", f.split/mib), fmtRatio(r), "they finish; ≤ 1.3× the split", yesNo(r <= 1.3)})
	}
	if !f.down.empty() {
		r := float64(f.down.median()) / float64(f.alone.median())
		rows = append(rows, row{"tier folder gone: `prefetch " + trainDir + "`",
			fmt.Sprintf("%s; S3 bytes %d MiB", f.down, f.downBytes/mib), "one node alone, no tier: " + f.alone.String(), fmtRatio(r), "≈ 1× (the usual speed; ≤ 1.2×)", yesNo(r <= 1.2)})
	}
	return rows
}

// samples lists the shared figure's samples for the report.
func (f *sharedFigures) samples() []namedStat {
	out := []namedStat{
		{"shared: prefetch alone", f.alone}, {"shared: 3 nodes prefetch at once, no tier", f.threeAlone},
		{"shared: read from S3", f.fromS3},
		{"shared: killed node, 2 others prefetch", f.killed}, {"shared: tier gone, prefetch", f.down},
	}
	for _, k := range f.kinds {
		out = append(out, namedStat{"shared: 3 nodes prefetch at once, " + k.name + " tier", k.three},
			namedStat{"shared: read from the " + k.name + " tier", k.read})
	}
	return out
}
