// table.go renders the results as markdown: the command and machine, the
// table of figures against their targets, and every sample.

package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// row is one line of the table.
type row struct {
	figure, ours, peer, ratio, target, met string
}

// yesNo is "yes" when ok.
func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// faster compares throughputs: ours over the peer's.
func faster(ours, peer stat) float64 {
	if peer.rate() == 0 {
		return 0
	}
	return ours.rate() / peer.rate()
}

// speedup compares times: the peer's over ours.
func speedup(ours, peer stat) float64 {
	if ours.median() == 0 {
		return 0
	}
	return float64(peer.median()) / float64(ours.median())
}

func fmtRatio(r float64) string { return fmt.Sprintf("%.2f×", r) }

const mib = 1 << 20

// rows builds the table from the results.
func (b *bench) rows() []row {
	r := &b.res
	s := b.spec
	split := fmt.Sprintf("`train` (%d × %d MiB)", s.Train, s.FileSize/mib)
	rd := fmt.Sprintf("%d readers", b.cfg.readers)
	var out []row
	// Rows of figures left out by -only are left out of the table.
	ratioRow := func(figure string, ours stat, peerName string, peer stat, ratio float64, target string, want float64) {
		if ours.empty() || peer.empty() {
			return
		}
		out = append(out, row{figure, ours.String(), peerName + ": " + peer.String(), fmtRatio(ratio),
			target, yesNo(ratio >= want)})
	}
	ratioRow("warm read of cached "+split+", page cache dropped, "+rd, r.fsWarm,
		"local disk", r.rawWarm, faster(r.fsWarm, r.rawWarm), "≥ 0.95× disk", 0.95)
	ratioRow("hot read of "+split+" (page cache kept), "+rd, r.fsHot,
		"local disk", r.rawHot, faster(r.fsHot, r.rawHot), "≥ 0.95× disk", 0.95)
	ratioRow(fmt.Sprintf("cold read of one %d MiB file, empty cache", s.FileSize/mib), r.fsColdOne,
		"one GET, one connection", r.singleGet, faster(r.fsColdOne, r.singleGet), "≥ 3× one GET", 3)
	ratioRow("cold read of "+split+", empty cache, "+rd, r.fsColdSplit,
		"`rclone copy --transfers 16`", r.rcCopy, faster(r.fsColdSplit, r.rcCopy), "≥ 1× rclone copy", 1)
	ratioRow("`prefetch train` (time; ratio = speedup)", r.fsPrefetch,
		"`aws s3 sync`", r.awsSync, speedup(r.fsPrefetch, r.awsSync), "≥ 2× faster", 2)
	ratioRow("`prefetch train` (time; ratio = speedup)", r.fsPrefetch,
		"`rclone copy --transfers 16`", r.rcCopy, speedup(r.fsPrefetch, r.rcCopy), "≥ 1.3× faster", 1.3)
	lsFolder := fmt.Sprintf("`ls -l` of `meta_train` (%d files)", s.MetaTrain)
	if !r.lsSecond.empty() {
		out = append(out, b.listingRows(lsFolder)...)
	}
	if r.rssLarge > 0 {
		out = append(out, b.rssRows(rd)...)
	}
	info := func(figure string, ours stat, peer stat) {
		if ours.empty() || peer.empty() {
			return
		}
		out = append(out, row{figure, ours.String(), "`rclone mount --vfs-cache-mode full`: " + peer.String(),
			fmtRatio(faster(ours, peer)), "(for comparison)", "—"})
	}
	info("cold read of "+split+", "+rd, r.fsColdSplit, r.rcCold)
	info("warm read of "+split+", page cache dropped", r.fsWarm, r.rcWarm)
	info("hot read of "+split, r.fsHot, r.rcHot)
	out = append(out, b.checksRows(split, rd)...)
	out = append(out, b.gvisorRows(rd)...)
	out = append(out, b.trainerRows()...)
	out = append(out, b.sharedRows()...)
	return append(out, b.scaleRows()...)
}

// checksRows are the rows of the checks figure: reads through the daemon
// and its CPU time, this build's and the baseline's.
func (b *bench) checksRows(split, rd string) []row {
	r := &b.res
	if r.chkDaemon.empty() {
		return nil
	}
	out := []row{{"warm read of cached " + split + " through the daemon (`--passthrough=false`; every block's CRC-32C checked), page cache dropped, " + rd,
		r.chkDaemon.String(), "local disk: " + r.chkDisk.String(), fmtRatio(faster(r.chkDaemon, r.chkDisk)), "(for comparison)", "—"}}
	old := "commit " + r.baselineRev
	if !r.chkOld.empty() {
		out = append(out, row{"the same, " + old + " (complete files spliced from the cache file, unchecked)",
			r.chkOld.String(), "local disk: " + r.chkDisk.String(), fmtRatio(faster(r.chkOld, r.chkDisk)), "(for comparison)", "—"})
	}
	cpu := row{fmt.Sprintf("daemon CPU per GB read from SSD in those reads (/proc/PID/stat utime+stime); CRC-32C alone: %.2f CPU-s/GB", r.crcPerGB),
		r.chkCPU.String(), "—", "—", "(for comparison)", "—"}
	if !r.chkOld.empty() {
		cpu.peer = old + ": " + r.chkOldCPU.String()
		if r.chkOldCPU.perGB() > 0 {
			cpu.ratio = fmtRatio(r.chkCPU.perGB() / r.chkOldCPU.perGB())
		}
	}
	return append(out, cpu)
}

// gvisorRows are the rows of the gVisor figure.
func (b *bench) gvisorRows(rd string) []row {
	g := b.res.gvisor
	if g == nil {
		return nil
	}
	set := fmt.Sprintf("%d files of %d MiB", g.files, g.fileSize/mib)
	plain := "plain file in the sandbox: " + g.plain.String()
	return []row{
		{fmt.Sprintf("gVisor (%s): cached read of %s, %s; daemon %s", g.runsc, set, rd, g.cachedCPU),
			g.cached.String(), plain, fmtRatio(faster(g.cached, g.plain)), "(for comparison)", "—"},
		{fmt.Sprintf("gVisor: cold read of %s, empty cache, S3 server and proxy in the sandbox, %s; daemon %s", set, rd, g.coldCPU),
			g.cold.String(), plain, fmtRatio(faster(g.cold, g.plain)), "(for comparison)", "—"},
	}
}

// listingRows are the rows of the ls -l and stat figures.
func (b *bench) listingRows(lsFolder string) []row {
	r := &b.res
	s := b.spec
	var out []row
	out = append(out, row{lsFolder + ", second time", r.lsSecond.String(), "—", "—",
		"≤ 0.05 s", yesNo(r.lsSecond.median() <= 50*time.Millisecond)})
	out = append(out, row{lsFolder + ", second time, kernel caches dropped", r.lsDropped.String(), "—", "—",
		"(for comparison)", "—"})
	wantLists := int64((s.MetaTrain + 999) / 1000)
	out = append(out, row{lsFolder + ", first time (S3 requests: most of any run)",
		fmt.Sprintf("%s; %d LIST, %d HEAD", r.lsFirst, r.lsLists, r.lsHeads), "—", "—",
		fmt.Sprintf("%d LIST (one per 1,000 keys), 0 HEAD", wantLists),
		yesNo(r.lsLists <= wantLists && r.lsHeads == 0)})
	out = append(out, row{fmt.Sprintf("`stat` of %d random files of listed `meta_train`, kernel caches dropped", r.statCount),
		fmt.Sprintf("%d S3 requests in %d runs; %s", r.statRequests, b.cfg.runs, r.statFiles), "—", "—",
		"0 S3 requests", yesNo(r.statRequests == 0)})
	return out
}

// rssRows are the rows of the peak RSS and remount figures.
func (b *bench) rssRows(rd string) []row {
	r := &b.res
	s := b.spec
	var out []row
	flat := float64(r.rssLarge) / float64(max(r.rssSmall, 1))
	out = append(out, row{"daemon peak RSS (VmHWM) prefetching the whole dataset",
		fmt.Sprintf("%.0f MiB (all: %d files, %d MiB)", float64(r.rssLarge)/mib, len(s.allPaths("")), b.datasetMiB(wholeDataset)),
		fmt.Sprintf("%.0f MiB (dev + meta_dev: %d MiB)", float64(r.rssSmall)/mib, b.datasetMiB(smallPart)),
		fmtRatio(flat), "≤ 128 MiB, flat (≤ 1.25× for 4× the data)",
		yesNo(r.rssLarge <= 128*mib && flat <= 1.25)})
	out = append(out, row{"remount with the warm cache, read everything (" + rd + ")",
		fmt.Sprintf("%d GET, %d LIST; %s: %d large files %s, %d small files %s", r.remountGets, r.remountLists,
			r.remount, s.Train+s.Dev, r.remountLarge, s.MetaTrain+s.MetaDev, r.remountSmall), "—", "—",
		"0 GET", yesNo(r.remountGets == 0)})
	return out
}

// datasetMiB is the size in MiB of the large files of folders.
func (b *bench) datasetMiB(folders []string) int64 {
	var n int64
	for _, f := range folders {
		n += b.spec.bytesOf(f)
	}
	return n / mib
}

// namedStat is a figure's samples with their name, for the report.
type namedStat struct {
	name string
	s    stat
}

// render is the whole report.
func (b *bench) render() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "## make bench (%s)\n\n", time.Now().Format("2006-01-02 15:04"))
	fmt.Fprintf(&sb, "    go run ./test/bench %s\n\n", strings.Join(b.cfg.args, " "))
	fmt.Fprintf(&sb, "- machine: %d CPUs (nproc), kernel %s, %s\n", runtime.NumCPU(), kernel(), cpuModel())
	build := commit(b.repo)
	if b.cfg.bin != "" {
		build = "-bin " + b.cfg.bin + " (not the checkout's)"
	}
	fmt.Fprintf(&sb, "- s3cachefs: %s, read mode %q, extra mount flags: %q\n", build, b.res.readMode, strings.Join(b.cfg.mountFlags, " "))
	if b.onlyOptIn() {
		fmt.Fprintf(&sb, "- S3: the synthetic server (s3server.Fake, generated keys and bytes) behind a proxy with %v to first byte and %s per connection\n",
			b.cfg.ttfb, fmtRate(b.cfg.rate))
	} else {
		fmt.Fprintf(&sb, "- S3: versitygw behind a proxy with %v to first byte and %s per connection; dataset %s\n",
			b.cfg.ttfb, fmtRate(b.cfg.rate), b.spec)
	}
	fmt.Fprintf(&sb, "- medians of %d runs; MB = 10^6 bytes; total run time %s\n\n", b.cfg.runs, time.Since(b.start).Round(time.Second))
	sb.WriteString("| figure | s3cachefs | peer / baseline | ratio | target | met? |\n")
	sb.WriteString("| --- | --- | --- | --- | --- | --- |\n")
	for _, r := range b.rows() {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s |\n", r.figure, r.ours, r.peer, r.ratio, r.target, r.met)
	}
	sb.WriteString("\nEvery sample:\n\n")
	r := &b.res
	all := []namedStat{
		{"local disk warm", r.rawWarm}, {"local disk hot", r.rawHot},
		{"s3cachefs warm", r.fsWarm}, {"s3cachefs hot", r.fsHot},
		{"s3cachefs cold one file", r.fsColdOne}, {"one GET", r.singleGet},
		{"s3cachefs cold split", r.fsColdSplit}, {"s3cachefs prefetch", r.fsPrefetch},
		{"aws s3 sync", r.awsSync}, {"rclone copy", r.rcCopy},
		{"ls -l first", r.lsFirst}, {"ls -l second", r.lsSecond}, {"ls -l, kernel caches dropped", r.lsDropped},
		{"stat", r.statFiles},
		{"rclone mount cold", r.rcCold}, {"rclone mount warm", r.rcWarm}, {"rclone mount hot", r.rcHot},
		{"checks: local disk warm", r.chkDisk}, {"checks: daemon warm", r.chkDaemon},
		{"checks: daemon warm, commit " + r.baselineRev, r.chkOld},
	}
	if r.trainer != nil {
		all = append(all, r.trainer.samples()...)
	}
	if r.shared != nil {
		all = append(all, r.shared.samples()...)
	}
	for _, s := range all {
		if s.s.empty() {
			continue
		}
		fmt.Fprintf(&sb, "- %s: %s\n", s.name, s.s.all())
	}
	if g := r.gvisor; g != nil {
		fmt.Fprintf(&sb, "- gVisor cold: %s\n- gVisor cached: %s\n- gVisor plain file: %s\n", g.cold.all(), g.cached.all(), g.plain.all())
		fmt.Fprintf(&sb, "- gVisor mount: read mode %q, %s, fallbacks %q; cached reads: %d blocks checked, %d FUSE READs of %d KiB on average; upload in the sandbox %s\n",
			g.res.ReadMode, g.res.FUSE, g.res.Fallbacks, g.res.BlocksChecked, g.res.Reads, g.res.ReadBytes/max(g.res.Reads, 1)>>10, fmtDur(g.res.Upload))
		fmt.Fprintf(&sb, "- gVisor mounts that failed and were tried again: %d of %d %q\n", len(g.res.MountFailures), g.res.Mounts, g.res.MountFailures)
	}
	return sb.String()
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), ":"))
		}
	}
	return "unknown CPU"
}

// commit names the checkout's HEAD, marked when the tree has changes.
func commit(repo string) string {
	out, err := exec.Command("git", "-C", repo, "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown commit"
	}
	return "commit " + strings.TrimSpace(string(out))
}
