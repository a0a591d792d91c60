package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"s3cachefs/cmd/s3cachefs/api"
)

// status gathers the daemon's figures.
func (d *daemon) status() api.Status {
	r := api.Status{
		Source: d.cfg.Source.String(), Mountpoint: d.cfg.Name, CacheDir: d.cfg.CacheDir, FuseFD: d.cfg.FuseFD,
		PID: os.Getpid(), UptimeSeconds: int64(time.Since(d.started).Seconds()),
		OpenFiles: d.root.OpenFiles(), Memory: d.cfg.Memory,
	}
	if st, err := d.db.Stats(); err != nil {
		r.Error = fmt.Sprintf("read index: %v", err)
	} else {
		r.Objects, r.CompleteObjects, r.CachedBytes = st.Objects, st.Complete, st.Bytes
	}
	cs := d.cache.Stats()
	r.Hits, r.Misses, r.BytesFromS3, r.BytesFromSSD, r.FetchErrors = cs.Hits, cs.Misses, cs.BytesFromS3, cs.BytesFromSSD, cs.FetchErrors
	r.UsedBytes, r.CacheLimit, r.CacheFull, r.Evictions, r.UncachedReads = cs.UsedBytes, d.cfg.MaxCacheSize, cs.Full, cs.Evictions, cs.Uncached
	r.CorruptBlocks, r.Eviction = cs.Corrupt, evictionName(d.cfg.Eviction)
	r.IndexCommits, r.CacheSyncs = d.db.Commits(), cs.Syncs
	r.SharedCache, r.TierBytes, r.TierMisses, r.TierRejected = d.cfg.SharedCache, cs.TierBytes, cs.TierMisses, cs.TierRejected
	r.Published, r.PublishErrors, r.PublishDropped = cs.Published, cs.PublishErrors, cs.PublishDropped
	r.ClaimsWon, r.ClaimsWaited, r.ClaimErrors = cs.ClaimsWon, cs.ClaimsWaited, cs.ClaimErrors
	var st unix.Statfs_t
	if err := unix.Statfs(d.cfg.CacheDir, &st); err == nil {
		r.FreeBytes = int64(st.Bavail) * int64(st.Bsize)
	}
	r.Prefetch = jobsWire(d.jobs.List())
	if n, err := d.db.PinnedCount(); err == nil {
		r.PinnedObjects = n
	}
	for _, p := range d.db.Pins() {
		r.PinnedPaths = append(r.PinnedPaths, api.PinnedPath{Job: p.Job, Path: p.Path, Objects: p.Objects})
	}
	fst := d.root.Stats()
	r.ReadMode, r.PassthroughOff = "daemon", fst.PassthroughOff
	if fst.Passthrough {
		r.ReadMode = "passthrough"
	}
	r.PassthroughOpens, r.DaemonOpens = fst.OpensPassthrough, fst.OpensDaemon
	r.FileNodes = fst.FileNodes
	r.FUSE, r.Fallbacks, r.BlocksChecked, r.BlocksFresh = fst.Kernel, fst.Fallbacks, cs.BlocksChecked, cs.BlocksFresh
	ss := d.store.Stats()
	r.S3GetRequests, r.S3ListRequests = ss.Gets, ss.Lists
	return r
}

const statusHelp = `usage: s3cachefs status [--mount MOUNTPOINT] [--json]

Shows what the cache of a mount holds and how reads were served. --mount
defaults to the mount holding the current directory, else the only one.

flags:
`

func cmdStatus(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	mount := mountFlag(fs)
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, err := parseArgs(fs, args, statusHelp)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("status takes no arguments, got %q (use --mount)", pos[0])
	}
	mp, err := resolveMount(*mount)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := newClient(mp).status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printStatus(stdout, r)
	return nil
}

func printStatus(w io.Writer, r api.Status) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	ratio := "-"
	if n := r.Hits + r.Misses; n > 0 {
		ratio = fmt.Sprintf("%.1f%%", 100*float64(r.Hits)/float64(n))
	}
	fmt.Fprintf(tw, "source\t%s\n", r.Source)
	if r.FuseFD > 0 {
		fmt.Fprintf(tw, "mountpoint\t%s (mounted by another process; served through /dev/fd/%d)\n", r.Mountpoint, r.FuseFD)
	} else {
		fmt.Fprintf(tw, "mountpoint\t%s\n", r.Mountpoint)
	}
	fmt.Fprintf(tw, "cache dir\t%s\n", r.CacheDir)
	fmt.Fprintf(tw, "daemon\tpid %d, up %s\n", r.PID, time.Duration(r.UptimeSeconds)*time.Second)
	fmt.Fprintf(tw, "cached\t%d objects (%d complete), %s on SSD\n", r.Objects, r.CompleteObjects, humanBytes(r.CachedBytes))
	limit := "no limit"
	if r.CacheLimit > 0 {
		limit = "limit " + humanBytes(r.CacheLimit)
	}
	full := ""
	if r.CacheFull {
		full = "; FULL: reads go to S3 uncached"
	}
	fmt.Fprintf(tw, "space\t%s used (%s, eviction %s), %s free on the filesystem, %d evictions%s\n",
		humanBytes(r.UsedBytes), limit, r.Eviction, humanBytes(r.FreeBytes), r.Evictions, full)
	mode := "passthrough (complete files are read by the kernel straight from SSD)"
	if r.ReadMode != "passthrough" {
		mode = "daemon (" + r.PassthroughOff + ")"
	}
	fmt.Fprintf(tw, "read mode\t%s\n", mode)
	fmt.Fprintf(tw, "fuse\t%s\n", r.FUSE)
	for _, f := range r.Fallbacks {
		fmt.Fprintf(tw, "fallback\t%s\n", f)
	}
	fmt.Fprintf(tw, "opens\t%d passthrough, %d through the daemon\n", r.PassthroughOpens, r.DaemonOpens)
	fmt.Fprintf(tw, "reads\t%d hits, %d misses (hit ratio %s) through the daemon\n", r.Hits, r.Misses, ratio)
	fmt.Fprintf(tw, "bytes\t%s from S3, %s from SSD through the daemon (%d blocks checked against their CRC-32C, %d served fresh from memory)\n",
		humanBytes(r.BytesFromS3), humanBytes(r.BytesFromSSD), r.BlocksChecked, r.BlocksFresh)
	fmt.Fprintf(tw, "S3 requests\t%d GET, %d LIST\n", r.S3GetRequests, r.S3ListRequests)
	if r.SharedCache != "" {
		fmt.Fprintf(tw, "shared cache\t%s: %s copied from it (%d objects not there, %d entries refused), %d published (%d failed, %d dropped)\n",
			r.SharedCache, humanBytes(r.TierBytes), r.TierMisses, r.TierRejected, r.Published, r.PublishErrors, r.PublishDropped)
		fmt.Fprintf(tw, "claims\t%d won (fetched from S3 for all nodes), %d waited for another node, %d failed\n",
			r.ClaimsWon, r.ClaimsWaited, r.ClaimErrors)
	}
	fmt.Fprintf(tw, "open files\t%d (%d file nodes held by the kernel)\n", r.OpenFiles, r.FileNodes)
	printMemory(tw, r.Memory)
	fmt.Fprintf(tw, "pinned\t%d objects in %d paths\n", r.PinnedObjects, len(r.PinnedPaths))
	for _, p := range r.Prefetch {
		t := p.Totals()
		fmt.Fprintf(tw, "prefetch\t%s %s: %d/%d files, %s / %s\n", p.ID, p.State, t.FilesDone, t.Files, humanBytes(t.BytesDone), humanBytes(t.Bytes))
	}
	if r.CorruptBlocks > 0 {
		fmt.Fprintf(tw, "damaged blocks\t%d found on SSD and fetched again\n", r.CorruptBlocks)
	}
	if r.FetchErrors > 0 {
		fmt.Fprintf(tw, "fetch errors\t%d (see the daemon log in the cache dir)\n", r.FetchErrors)
	}
	if r.Error != "" {
		fmt.Fprintf(tw, "error\t%s\n", r.Error)
	}
	tw.Flush()
}

// humanBytes formats n with binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
