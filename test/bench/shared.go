// shared.go is the shared figure (issue 14): three daemons on this
// machine, each with its own cache dir and mountpoint, sharing one folder
// tier (--shared-cache), the origin S3 behind the usual proxy.

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// sharedFigures is what the shared figure measured.
type sharedFigures struct {
	split int64 // bytes of the train split
	// prefetch train: one node without a tier; three nodes at once
	// sharing a tier (the wall time until the last ends), and the S3
	// bytes of each such run.
	alone, three stat
	threeBytes   []int64
	// The same three nodes at once without a tier, each fetching all of
	// it from S3: what the tier saves on this one machine, whose disk and
	// CPUs the three share.
	threeAlone stat
	// CPU time of the three daemons over those runs, summed: with the
	// tier, and without.
	threeCPU, threeAloneCPU time.Duration
	// A read of train on a node with an empty cache: from a tier that
	// holds it, and from S3 without a tier; the data GETs of the first.
	fromTier, fromS3 stat
	fromTierGets     int64
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
	tier := b.path("tmp", "shared-tier")
	for range b.cfg.runs {
		if err := b.sharedAlone(ctx, f); err != nil {
			return err
		}
		if err := b.sharedThree(ctx, f, tier); err != nil {
			return err
		}
		if err := b.sharedThreeAlone(ctx, f); err != nil {
			return err
		}
		if err := b.sharedDown(ctx, f); err != nil {
			return err
		}
	}
	b.logf("shared: prefetch alone %s [%s]; three nodes %s [%s], S3 bytes %v of %d; three without a tier %s [%s]",
		f.alone, f.alone.all(), f.three, f.three.all(), f.threeBytes, f.split, f.threeAlone, f.threeAlone.all())
	for range b.cfg.runs {
		if err := b.sharedRead(ctx, f, tier); err != nil {
			return err
		}
	}
	b.logf("shared: read from the tier %s [%s] (%d GETs); from S3 %s [%s]", f.fromTier, f.fromTier.all(), f.fromTierGets, f.fromS3, f.fromS3.all())
	if err := b.sharedPoison(ctx, f, tier); err != nil {
		return err
	}
	if err := b.sharedKilled(ctx, f); err != nil {
		return err
	}
	b.logf("shared: poisoned entry refused %d, file right %v; killed node (%d claims): %s, S3 bytes %d; tier gone: %s, S3 bytes %d",
		f.poisonRefused, f.poisonRight, f.killedHeld, f.killed, f.killedBytes, f.down, f.downBytes)
	return os.RemoveAll(tier)
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

// sharedAlone times `prefetch train` on one node without a tier.
func (b *bench) sharedAlone(ctx context.Context, f *sharedFigures) error {
	ms, err := b.sharedNodes(ctx, "shared-alone", 1)
	if err != nil {
		return err
	}
	if err := b.warmServer(ctx); err != nil {
		return err
	}
	d, err := b.prefetchAll(ctx, ms, nil)
	if err != nil {
		return err
	}
	f.alone.add(d, f.split)
	return b.dropAll(ms)
}

// sharedThreeAlone times `prefetch train` on three nodes at once without
// a tier.
func (b *bench) sharedThreeAlone(ctx context.Context, f *sharedFigures) error {
	ms, err := b.sharedNodes(ctx, "shared-solo", 3)
	if err != nil {
		return err
	}
	if err := b.warmServer(ctx); err != nil {
		return err
	}
	d, err := b.prefetchAll(ctx, ms, &f.threeAloneCPU)
	if err != nil {
		return err
	}
	f.threeAlone.add(d, f.split)
	return b.dropAll(ms)
}

// sharedThree times `prefetch train` on three nodes at once sharing a
// fresh tier, and checks that each ends with all of it.
func (b *bench) sharedThree(ctx context.Context, f *sharedFigures, tier string) error {
	if err := freshTier(tier); err != nil {
		return err
	}
	ms, err := b.sharedNodes(ctx, "shared-node", 3, "--shared-cache", tier)
	if err != nil {
		return err
	}
	if err := b.warmServer(ctx); err != nil {
		return err
	}
	b.proxy.Reset()
	d, err := b.prefetchAll(ctx, ms, &f.threeCPU)
	if err != nil {
		return err
	}
	f.three.add(d, f.split)
	f.threeBytes = append(f.threeBytes, b.proxy.Counts().GetBytes)
	for i, m := range ms {
		st, err := b.fsStatus(ctx, m)
		if err != nil {
			return err
		}
		if st.BytesFromS3+st.TierBytes != f.split {
			return fmt.Errorf("node %d ended with %d bytes from S3 and %d from the tier, not the split's %d", i, st.BytesFromS3, st.TierBytes, f.split)
		}
	}
	return b.dropAll(ms)
}

// sharedRead times a read of train on a node with an empty cache, from
// the tier the three nodes filled, then from S3 with no tier.
func (b *bench) sharedRead(ctx context.Context, f *sharedFigures, tier string) error {
	for _, side := range []struct {
		s     *stat
		flags []string
	}{{&f.fromTier, []string{"--shared-cache", tier}}, {&f.fromS3, nil}} {
		ms, err := b.sharedNodes(ctx, "shared-read", 1, side.flags...)
		if err != nil {
			return err
		}
		if err := b.warmServer(ctx); err != nil {
			return err
		}
		b.proxy.Reset()
		if err := b.sampleReads(ctx, side.s, b.trainPaths(ms[0].dir), true); err != nil {
			return err
		}
		if side.s == &f.fromTier {
			f.fromTierGets += b.proxy.Counts().GetObject
		}
		if err := b.dropAll(ms); err != nil {
			return err
		}
	}
	return nil
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

// forgeEntry forges the tier entry at path if it holds want: it flips a
// byte of the object and rewrites that block's CRC-32C in the trailer and
// the trailer's own, as someone who can write the tier could. The
// trailer's layout is blockcache/tier's (folder.go).
func forgeEntry(path string, want []byte) (bool, error) {
	b, err := os.ReadFile(path)
	size := len(want)
	if err != nil || len(b) < size+20 || !bytes.Equal(b[:size], want) {
		return false, err
	}
	t := b[size : len(b)-12] // the trailer, less its CRC-32C and length
	off := 8                 // magic
	next := func() int {
		v, n := binary.Uvarint(t[off:])
		off += n
		return int(v)
	}
	bs := next()
	for range 3 { // bucket, key, ETag
		off += next()
	}
	next() // size
	if count := next(); count != (size+bs-1)/bs || len(t)-off != 4*count {
		return false, fmt.Errorf("%s: not the trailer layout this figure knows", path)
	}
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	at := size / 2
	b[at] ^= 0x01
	blk := at / bs
	sum := crc32.Checksum(b[blk*bs:min((blk+1)*bs, size)], castagnoli)
	binary.LittleEndian.PutUint32(t[off+4*blk:], sum)
	binary.LittleEndian.PutUint32(b[len(b)-12:], crc32.Checksum(b[size:len(b)-12], castagnoli))
	return true, os.WriteFile(path, b, 0o664)
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
		return err
	}
	if err := b.warmServer(ctx); err != nil {
		return err
	}
	b.proxy.Reset()
	d, err := b.prefetchAll(ctx, ms, nil)
	if err != nil {
		return err
	}
	f.down.add(d, f.split)
	f.downBytes = b.proxy.Counts().GetBytes
	return b.dropAll(ms)
}

// sharedRows are the rows of the shared figure.
func (b *bench) sharedRows() []row {
	f := b.res.shared
	if f == nil || f.three.empty() {
		return nil
	}
	split := fmt.Sprintf("`train` (%d × %d MiB)", b.spec.Train, b.spec.FileSize/mib)
	worst := int64(0)
	for _, n := range f.threeBytes {
		worst = max(worst, n)
	}
	bytesRatio := float64(worst) / float64(f.split)
	wall := float64(f.three.median()) / float64(f.alone.median())
	rows := []row{
		{"3 nodes sharing a folder tier run `prefetch " + trainDir + "` at once: S3 bytes (most of any run)",
			fmt.Sprintf("%d MiB", worst/mib), fmt.Sprintf("the split: %d MiB", f.split/mib), fmtRatio(bytesRatio), "≤ 1.05× the split", yesNo(bytesRatio <= 1.05)},
		{"3 nodes sharing a folder tier run `prefetch " + trainDir + "` at once: wall time to the last",
			f.three.String(), "one node alone, no tier: " + f.alone.String(), fmtRatio(wall), "≤ 1.2× one node", yesNo(wall <= 1.2)},
		{"3 nodes run `prefetch " + trainDir + "` at once on this one machine: with a tier / without (each from S3)",
			fmt.Sprintf("%s; daemons' CPU %.1f s per run", f.three, f.threeCPU.Seconds()/float64(len(f.three.samples))),
			fmt.Sprintf("3 nodes, no tier: %s; daemons' CPU %.1f s per run", f.threeAlone, f.threeAloneCPU.Seconds()/float64(len(f.threeAlone.samples))),
			fmtRatio(speedup(f.three, f.threeAlone)), "(for comparison: speedup)", "—"},
		{"a node with an empty cache reads " + split + " from the tier (page cache dropped)",
			fmt.Sprintf("%s; %d GETs", f.fromTier, f.fromTierGets), "from S3, no tier: " + f.fromS3.String(),
			fmtRatio(faster(f.fromTier, f.fromS3)), "0 GETs, ≥ 0.8× S3 cold", yesNo(f.fromTierGets == 0 && faster(f.fromTier, f.fromS3) >= 0.8)},
		{"a poisoned tier entry (a byte flipped, its CRC-32C rewritten to match)",
			fmt.Sprintf("%d refused; file read right: %v", f.poisonRefused, f.poisonRight), "—", "—", "never served", yesNo(f.poisonRefused == 1 && f.poisonRight)},
	}
	if !f.killed.empty() {
		r := float64(f.killedBytes) / float64(f.split)
		rows = append(rows, row{fmt.Sprintf("a node killed (SIGKILL) holding %d claims (TTL 5s); 2 others `prefetch %s`", f.killedHeld, trainDir),
			fmt.Sprintf("%s; S3 bytes %d MiB", f.killed, f.killedBytes/mib), fmt.Sprintf("the split: %d MiB", f.split/mib), fmtRatio(r), "they finish; ≤ 1.3× the split", yesNo(r <= 1.3)})
	}
	if !f.down.empty() {
		r := float64(f.down.median()) / float64(f.alone.median())
		rows = append(rows, row{"tier folder gone: `prefetch " + trainDir + "`",
			fmt.Sprintf("%s; S3 bytes %d MiB", f.down, f.downBytes/mib), "one node alone, no tier: " + f.alone.String(), fmtRatio(r), "≈ 1× (the usual speed)", yesNo(r <= 1.2)})
	}
	return rows
}

// samples lists the shared figure's samples for the report.
func (f *sharedFigures) samples() []namedStat {
	return []namedStat{
		{"shared: prefetch alone", f.alone}, {"shared: 3 nodes prefetch at once", f.three},
		{"shared: 3 nodes prefetch at once, no tier", f.threeAlone},
		{"shared: read from the tier", f.fromTier}, {"shared: read from S3", f.fromS3},
		{"shared: killed node, 2 others prefetch", f.killed}, {"shared: tier gone, prefetch", f.down},
	}
}
