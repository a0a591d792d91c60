// checks.go measures what the per-read CRC-32C checks of issue 10 cost:
// warm reads of the cached train split through the daemon (no
// passthrough, as under gVisor or without root) beside the same bytes read
// from local disk, and the daemon's CPU time per GB it served from SSD.
// Before the checks, the daemon spliced complete files to the kernel
// unchecked; with -checks-baseline REV a build of that commit is measured
// beside this one, built in the work dir from `git archive REV`.

package main

import (
	"context"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cpuUse is CPU time a daemon spent over some reads, and what they read.
type cpuUse struct {
	user, sys time.Duration
	bytes     int64
}

// add counts CPU time user+sys spent over bytes more.
func (c *cpuUse) add(user, sys time.Duration, bytes int64) {
	c.user += user
	c.sys += sys
	c.bytes += bytes
}

// perGB is CPU seconds (user+system) per GB (1e9 bytes) read.
func (c cpuUse) perGB() float64 {
	if c.bytes == 0 {
		return 0
	}
	return (c.user + c.sys).Seconds() / (float64(c.bytes) / 1e9)
}

// String is "0.52 CPU-s/GB (user 0.30, system 0.22)".
func (c cpuUse) String() string {
	gb := float64(max(c.bytes, 1)) / 1e9
	return fmt.Sprintf("%.2f CPU-s/GB (user %.2f, system %.2f)", c.perGB(), c.user.Seconds()/gb, c.sys.Seconds()/gb)
}

// checkSide is one daemon of the checks figure.
type checkSide struct {
	label string // for the log
	bin   string
	m     *fsMount
	s     *stat
	cpu   *cpuUse
}

// figChecks mounts this build (and the baseline's, if any) with
// --passthrough=false on caches that hold the train split, then takes runs
// samples of each, the disk's first, with the page cache dropped before
// each, and the daemon's CPU time over each of its own samples.
func (b *bench) figChecks(ctx context.Context) error {
	r := &b.res
	sides := []*checkSide{{label: "this build", bin: b.bin, s: &r.chkDaemon, cpu: &r.chkCPU}}
	if b.cfg.baseline != "" {
		bin, rev, err := b.buildBaseline(ctx, b.cfg.baseline)
		if err != nil {
			return err
		}
		r.baselineRev = rev
		sides = append(sides, &checkSide{label: "commit " + rev, bin: bin, s: &r.chkOld, cpu: &r.chkOldCPU})
	}
	for i, sd := range sides {
		name := fmt.Sprintf("checks%d", i)
		cache := b.path("tmp", name+"-cache")
		if err := os.RemoveAll(cache); err != nil {
			return err
		}
		m, err := b.mountBin(ctx, sd.bin, name, cache, "--passthrough=false")
		if err != nil {
			return err
		}
		sd.m = m
		st, err := b.fsStatus(ctx, m)
		if err != nil {
			return err
		}
		if st.ReadMode != "daemon" {
			return fmt.Errorf("%s with --passthrough=false: read mode %q, want daemon", sd.label, st.ReadMode)
		}
		if _, err := b.prefetch(ctx, m, trainDir); err != nil {
			return err
		}
	}
	before, err := b.statuses(ctx, sides)
	if err != nil {
		return err
	}
	raw := b.trainPaths(b.path("dataset"))
	for range b.cfg.runs {
		if err := b.sampleReads(ctx, &r.chkDisk, raw, true); err != nil {
			return err
		}
		for _, sd := range sides {
			if err := dropCaches(); err != nil {
				return err
			}
			u0, s0 := cpuTimes(sd.m.pid)
			if err := b.sampleReads(ctx, sd.s, b.trainPaths(sd.m.dir), false); err != nil {
				return err
			}
			u1, s1 := cpuTimes(sd.m.pid)
			sd.cpu.user += u1 - u0
			sd.cpu.sys += s1 - s0
			sd.cpu.bytes += sd.s.samples[len(sd.s.samples)-1].bytes
		}
	}
	after, err := b.statuses(ctx, sides)
	if err != nil {
		return err
	}
	for i, sd := range sides {
		if gets := after[i].S3GetRequests - before[i].S3GetRequests; gets != 0 {
			return fmt.Errorf("daemon reads, %s: %d GETs, want none (the split was prefetched)", sd.label, gets)
		}
	}
	// Every byte must have come from SSD through the checked path, not
	// from the kernel's page cache: else the figure measures something
	// else.
	r.chkBlocks = after[0].BlocksChecked - before[0].BlocksChecked
	ssd := after[0].BytesFromSSD - before[0].BytesFromSSD
	if ssd != r.chkCPU.bytes || r.chkBlocks == 0 {
		return fmt.Errorf("daemon reads: %d bytes from SSD, %d blocks checked; want %d bytes, checked blocks",
			ssd, r.chkBlocks, r.chkCPU.bytes)
	}
	b.logf("disk warm: %s [%s]", r.chkDisk, r.chkDisk.all())
	for _, sd := range sides {
		b.logf("daemon reads, %s: %s [%s]; %s", sd.label, sd.s, sd.s.all(), sd.cpu)
	}
	reads := max(after[0].Hits-before[0].Hits, 1)
	b.logf("this build checked %d blocks (%d MB) in %d FUSE READs of %d KiB on average", r.chkBlocks, ssd/1e6, reads, ssd/reads>>10)
	if r.crcPerGB, err = crcCost(); err != nil {
		return err
	}
	b.logf("CRC-32C alone: %.3f CPU-s/GB", r.crcPerGB)
	for _, sd := range sides {
		if err := b.dropFS(sd.m, true); err != nil {
			return err
		}
	}
	return nil
}

// statuses is `status --json` of every side's mount.
func (b *bench) statuses(ctx context.Context, sides []*checkSide) ([]fsStatus, error) {
	out := make([]fsStatus, len(sides))
	for i, sd := range sides {
		var err error
		if out[i], err = b.fsStatus(ctx, sd.m); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// crcCost is the CPU time of CRC-32C alone, per GB, as the daemon computes
// it (hash/crc32, Castagnoli, 1 MiB blocks), on one thread of this machine.
func crcCost() (float64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(i * 31)
	}
	table := crc32.MakeTable(crc32.Castagnoli)
	var before, after unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &before); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	const blocks = 2048
	// Not optimised away: Update ends in assembly the compiler cannot see into.
	var sum uint32
	for range blocks {
		sum = crc32.Update(sum, table, block)
	}
	_ = sum
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &after); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	return cpu.Seconds() / (blocks << 20 / 1e9), nil
}

// buildBaseline builds s3cachefs as of rev from `git archive` into
// WORK/baseline (never inside the checkout) and returns the binary and
// rev's short hash.
func (b *bench) buildBaseline(ctx context.Context, rev string) (bin, short string, err error) {
	out, err := exec.CommandContext(ctx, "git", "-C", b.repo, "rev-parse", "--short", rev+"^{commit}").Output()
	if err != nil {
		return "", "", fmt.Errorf("-checks-baseline %s: not a commit of %s: %w", rev, b.repo, err)
	}
	short = strings.TrimSpace(string(out))
	dir := b.path("baseline")
	if err := os.RemoveAll(dir); err != nil {
		return "", "", err
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", "", err
	}
	tar := filepath.Join(dir, "src.tar")
	bin = filepath.Join(dir, "s3cachefs")
	b.logf("building commit %s into %s", short, bin)
	for _, step := range [][]string{
		{"git", "-C", b.repo, "archive", "-o", tar, short},
		{"tar", "-xf", tar, "-C", src},
		{"go", "build", "-o", bin, "./cmd/s3cachefs"},
	} {
		cmd := exec.CommandContext(ctx, step[0], step[1:]...)
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("build commit %s: %s: %w\n%s", short, strings.Join(step, " "), err, out)
		}
	}
	return bin, short, nil
}
