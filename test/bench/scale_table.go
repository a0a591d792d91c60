// scale_table.go renders the scale figure: one row per target of issue 13.

package main

import (
	"fmt"
	"strings"
	"time"
)

// metMissed is "met" or "MISSED".
func metMissed(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// notMeasured is a row for a target the run could not measure.
func notMeasured(figure, target, why string) row {
	return row{figure, "not measured: " + why, "—", "—", target, "—"}
}

// filesPerSec is a stat of reads of smallFile files as files/s.
func filesPerSec(s stat) string {
	return fmt.Sprintf("%.0f files/s (%s)", s.rate()/smallFile, fmtDur(s.median()))
}

func mibOf(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/mib) }

// keysOf is n with thousands separators.
func keysOf(n int) string {
	s := fmt.Sprint(n)
	var out []string
	for len(s) > 3 {
		out = append([]string{s[len(s)-3:]}, out...)
		s = s[:len(s)-3]
	}
	return strings.Join(append([]string{s}, out...), ",")
}

// scaleRows are the rows of the scale figure, in the order.
func (b *bench) scaleRows() []row {
	sc := b.res.scale
	if sc == nil {
		return nil
	}
	c := sc.cfg
	var out []row
	add := func(r row) { out = append(out, r) }
	folder := fmt.Sprintf("folder of %s keys", keysOf(c.bigFolder))

	// ls, first time.
	switch {
	case sc.lsUnfinished > 0:
		add(row{"scale: `ls` (scandir) of a " + folder + ", first time",
			fmt.Sprintf("did not finish: %s of %s entries after %s (-scale-ls-for), %d LIST, %d HEAD; the daemon was stopped, so the second scandir, the stats and this folder's RSS were not measured",
				keysOf(sc.lsEntries), keysOf(c.bigFolder), fmtDur(sc.lsUnfinished), sc.lsLists, sc.lsHeads),
			"`rclone lsf`: " + sc.rcLsf.String(), "—", "one LIST per 1,000 keys, no HEAD, ≥ 1× rclone lsf", "MISSED"})
	case sc.lsFirst.empty():
		add(notMeasured("scale: `ls` (scandir) of a "+folder+", first time", "one LIST per 1,000 keys, no HEAD, ≥ 1× `rclone lsf`", "the step failed"))
	default:
		wantLists := int64((c.bigFolder + 999) / 1000)
		ratio := speedup(sc.lsFirst, sc.rcLsf)
		add(row{"scale: `ls` (scandir) of a " + folder + ", first time (ratio = rclone's time / ours)",
			fmt.Sprintf("%s; %d LIST (%.2f per 1,000 keys), %d HEAD", sc.lsFirst, sc.lsLists, float64(sc.lsLists)*1000/float64(c.bigFolder), sc.lsHeads),
			fmt.Sprintf("`rclone lsf`: %s, %d LIST", sc.rcLsf, sc.rcLists), fmtRatio(ratio),
			fmt.Sprintf("≤ %d LIST, 0 HEAD, ≥ 1× rclone lsf", wantLists),
			metMissed(sc.lsLists <= wantLists && sc.lsHeads == 0 && ratio >= 1)})
	}
	// ls, second time.
	if !sc.lsSecond.empty() {
		r := float64(sc.lsSecond.median()) / float64(max(sc.lsLocal.median(), 1))
		add(row{"scale: the same, second time within the TTL (ratio = ours / local)", sc.lsSecond.String(),
			"scandir of a local folder of as many files: " + sc.lsLocal.String(), fmtRatio(r), "≤ 2× local", metMissed(r <= 2)})
	}
	// stat.
	if sc.statFSN > 0 {
		r := float64(sc.statFS) / float64(max(sc.statLocal, 1))
		done := ""
		if sc.statFSN < 1000 {
			done = fmt.Sprintf(" (only %d of 1,000 done in -scale-stat-for %s)", sc.statFSN, c.statFor)
		}
		add(row{"scale: `stat` of 1,000 random names of that folder, kernel caches dropped (mean per stat; ratio = ours / local)",
			fmt.Sprintf("%s per stat%s; %d S3 requests", fmtDur(sc.statFS), done, sc.statRequests),
			fmt.Sprintf("local folder: %s per stat", fmtDur(sc.statLocal)), fmtRatio(r),
			"0 S3 requests; ≤ 2× local", metMissed(sc.statRequests == 0 && r <= 2)})
	}
	// ImageFolder scan.
	if sc.imgFiles > 0 {
		size := fmt.Sprintf("%s folders × %s files", keysOf(c.imgFolders), keysOf(c.imgFiles))
		if c.imgFolders*c.imgFiles < 1_300_000 {
			size += " (issue: 1,000 × 1,300; -scale-img-folders)"
		}
		add(row{"scale: ImageFolder-style scan, " + size + ": scandir every folder, stat every file (4 folders at a time)",
			fmt.Sprintf("daemon VmRSS %s after it; scan %s", mibOf(sc.imgRSS), sc.imgScan), "—", "—",
			"RSS ≤ 256 MiB", metMissed(sc.imgRSS <= 256*mib)})
	}
	// Cold reads.
	if !sc.coldFS.empty() && !sc.coldRclone.empty() {
		r := faster(sc.coldFS, sc.coldRclone)
		add(row{fmt.Sprintf("scale: cold reads of %s random 110 KB files, %d readers", keysOf(c.reads), c.readers),
			filesPerSec(sc.coldFS), "`rclone mount --vfs-cache-mode full`: " + filesPerSec(sc.coldRclone), fmtRatio(r),
			"≥ 1× rclone mount", metMissed(r >= 1)})
	}
	// Prefetch, and index commits in it.
	if !sc.prefetch.empty() && !sc.rcCopy.empty() {
		r := speedup(sc.prefetch, sc.rcCopy)
		size := keysOf(c.prefetch)
		if c.prefetch < 100_000 {
			size += " (issue: 100,000; -scale-prefetch)"
		}
		add(row{"scale: `prefetch` of " + size + " files of 110 KB (ratio = rclone's time / ours)",
			fmt.Sprintf("%s; daemon VmHWM %s", sc.prefetch, mibOf(sc.prefetchRSS)), "`rclone copy --transfers 32`: " + sc.rcCopy.String(),
			fmtRatio(r), "≥ 1.3× rclone copy; RSS ≤ 256 MiB", metMissed(r >= 1.3 && sc.prefetchRSS <= 256*mib)})
		per := float64(sc.commits) / float64(max(sc.fetched, 1))
		add(row{"scale: index commits and cache-file syncs per object fetched in that prefetch (`status --json` index_commits, cache_syncs)",
			fmt.Sprintf("%.2f commits, %.2f syncs per object (%d, %d for %d objects)", per, float64(sc.syncs)/float64(max(sc.fetched, 1)), sc.commits, sc.syncs, sc.fetched),
			"—", "—", "≤ 0.1 commits per object", metMissed(per <= 0.1)})
	}
	// Stat after expiry.
	if sc.listTime > 0 {
		r := float64(sc.expiredStat) / float64(max(sc.listTime, 1))
		add(row{fmt.Sprintf("scale: first `stat` in a folder of %s keys whose listing just expired (`--metadata-ttl %s`; ratio = that stat / the LIST)", keysOf(c.smallFolder), c.ttl),
			fmt.Sprintf("%s; %d LIST requests during it, %d by %s after (the refresh)", fmtDur(sc.expiredStat), sc.expiredLists,
				sc.refreshLists, (3*sc.listTime + 5*time.Second).Round(time.Second)),
			"first stat of a fresh mount (waits for the whole LIST): " + fmtDur(sc.listTime), fmtRatio(r),
			"served from the old listing at once (≤ 0.1× the LIST) and refreshed", metMissed(r <= 0.1 && sc.refreshLists > 0)})
	}
	// Many cached objects.
	at := fmt.Sprintf("%s cached objects", keysOf(sc.cachedObjects))
	if sc.cachedObjects < 1_400_000 {
		at += fmt.Sprintf(" (issue: 1,400,000; the prefetch that made them ran at %.0f objects/s)", sc.cacheRate)
	}
	if sc.statusTime.empty() {
		add(notMeasured("scale: `status` and `/metrics` with 1.4 M cached objects", "≤ 100 ms each", "the step failed"))
	} else {
		ok := sc.statusTime.median() <= 100*time.Millisecond && sc.metricsTime.median() <= 100*time.Millisecond
		add(row{"scale: `status --json` (the command, process start included) and `GET /metrics` with " + at,
			fmt.Sprintf("status %s, /metrics %s", sc.statusTime, sc.metricsTime), "—", "—", "≤ 100 ms each", metMissed(ok)})
	}
	if !sc.fillFull.empty() && !sc.fillEmpty.empty() {
		r := faster(sc.fillFull, sc.fillEmpty)
		add(row{fmt.Sprintf("scale: eviction with %s, cache always full (`--max-cache-size` = used + 64 MiB), 8 cold readers of %d × 1 MiB files; p99 open+read of a cached file meanwhile (%d opens)", at, c.fill, sc.opens),
			fmt.Sprintf("%s; p99 open %s", sc.fillFull, fmtDur(sc.openP99)), "empty cache: " + sc.fillEmpty.String(), fmtRatio(r),
			"≥ 0.8× empty; p99 open ≤ 10 ms", metMissed(r >= 0.8 && sc.openP99 <= 10*time.Millisecond)})
	}
	if !sc.startup.empty() {
		add(row{"scale: mount startup with " + at + " (the `mount` command until it returns with the mount ready)",
			sc.startup.String(), "—", "—", "≤ 1 s", metMissed(sc.startup.median() <= time.Second)})
	}
	// RSS.
	if sc.peakRSS > 0 && (sc.rssSmall == 0 || sc.rssBig == 0) {
		add(row{"scale: daemon peak RSS (VmHWM) over the whole scale run", mibOf(sc.peakRSS), "—", "—",
			"≤ 512 MiB peak (flatness against keys listed: not measured)", metMissed(sc.peakRSS <= 512*mib)})
	}
	if sc.rssSmall > 0 && sc.rssBig > 0 {
		r := float64(sc.rssBig) / float64(sc.rssSmall)
		keys := fmt.Sprintf("%s vs %s keys listed", keysOf(c.smallFolder), keysOf(sc.rssBigKeys))
		if sc.rssBigKeys < 10_000_000 {
			keys += " (issue: 10^5 vs 10^7; -scale-huge-keys 10000000)"
		}
		add(row{"scale: daemon peak RSS (VmHWM) over the whole scale run; and after scandir of one folder, " + keys,
			fmt.Sprintf("peak %s; %s vs %s (resident then: %s vs %s)", mibOf(sc.peakRSS), mibOf(sc.rssSmall), mibOf(sc.rssBig),
				sc.rssSmallParts, sc.rssBigParts), "—", fmtRatio(r),
			"≤ 512 MiB peak; ≤ 1.5× for 100× the keys", metMissed(sc.peakRSS <= 512*mib && r <= 1.5)})
	}
	for _, n := range sc.notes {
		add(row{"scale: note", n, "—", "—", "—", "—"})
	}
	return out
}
