package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"s3cachefs/cmd/s3cachefs/api"
)

const prefetchHelp = `usage: s3cachefs prefetch [--mount M] [--detach] [--json] [--shard I/N] PATH...
       s3cachefs prefetch [--mount M] --cancel JOB
       s3cachefs prefetch [--mount M] --unpin PATH...

Fetches every object under the PATHs (folders or files, relative to the
mount root or absolute under it) into the cache and pins them. The job runs
inside the daemon: Ctrl-C stops this display, not the job; --cancel stops it.
With --shard I/N (or, without it, $RANK and $WORLD_SIZE when both are set)
it fetches only share I of N of the objects, so that N nodes each warm
their share.

flags:
`

// shard is a share I of N of a prefetch's objects; the zero shard is all.
type shard struct{ index, count int }

// parseShard parses --shard I/N.
func parseShard(s string) (shard, error) {
	if s == "" {
		return shard{}, nil
	}
	i, n, ok := strings.Cut(s, "/")
	sh, err := makeShard(i, n)
	if !ok || err != nil {
		return shard{}, usagef("--shard %q: want I/N with 0 <= I < N, like 0/4", s)
	}
	return sh, nil
}

// shardFromEnv is the shard torchrun and most launchers name in $RANK and
// $WORLD_SIZE: none unless both are set.
func shardFromEnv(rank, world string) (shard, error) {
	if rank == "" || world == "" {
		return shard{}, nil
	}
	sh, err := makeShard(rank, world)
	if err != nil {
		return shard{}, usagef("$RANK=%q and $WORLD_SIZE=%q do not name a shard (want 0 <= RANK < WORLD_SIZE); give --shard I/N", rank, world)
	}
	return sh, nil
}

func makeShard(i, n string) (shard, error) {
	index, err1 := strconv.Atoi(i)
	count, err2 := strconv.Atoi(n)
	if err1 != nil || err2 != nil || count < 1 || index < 0 || index >= count {
		return shard{}, errors.New("bad shard")
	}
	return shard{index: index, count: count}, nil
}

// errInterrupted ends a progress display on Ctrl-C; the job goes on.
var errInterrupted = errors.New("interrupted")

func cmdPrefetch(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("prefetch", flag.ContinueOnError)
	mount := mountFlag(fs)
	detach := fs.Bool("detach", false, "start the job and return at once")
	asJSON := fs.Bool("json", false, "print progress as one JSON object per line")
	cancel := fs.String("cancel", "", "cancel the job with this ID")
	unpin := fs.Bool("unpin", false, "release the pins on PATHs instead of fetching them")
	interval := typedFlag(fs, "interval", "1s", "how often progress is shown (a `duration`)", durationIn("--interval", time.Nanosecond, 0, "positive"))
	shardFlag := typedFlag(fs, "shard", "", "fetch only share `I/N` of the objects (0 <= I < N), by a hash of each key: N nodes each given their own I warm every object once between them; default $RANK/$WORLD_SIZE when both are set, else all", parseShard)
	pos, err := parseArgs(fs, args, prefetchHelp)
	if err != nil {
		return err
	}
	// --cancel and --unpin are their own actions: the display flags mean
	// nothing to them, and --cancel with --unpin would be two actions.
	for _, action := range []string{"cancel", "unpin"} {
		if !flagSet(fs, action) {
			continue
		}
		for _, other := range []string{"cancel", "unpin", "detach", "json", "interval", "shard"} {
			if other != action && flagSet(fs, other) {
				return usagef("--%s cannot be combined with --%s", action, other)
			}
		}
	}
	switch {
	case *cancel != "" && len(pos) > 0:
		return usagef("--cancel takes no PATHs")
	case *cancel != "" && !validJobID(*cancel):
		return usagef("--cancel %q is not a job id (status lists the jobs)", *cancel)
	case *cancel == "" && len(pos) == 0:
		return usagef("prefetch needs at least one PATH")
	}
	mp, err := resolveMount(*mount)
	if err != nil {
		return err
	}
	c := newClient(mp)
	ctx := context.Background()
	if *cancel != "" {
		if err := c.cancel(ctx, *cancel); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "cancelled prefetch job %s\n", *cancel)
		return nil
	}
	paths, err := mountRelative(mp, pos)
	if err != nil {
		return err
	}
	if *unpin {
		r, err := c.unpin(ctx, paths)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "unpinned %d objects; eviction may remove them now\n", r.Objects)
		return nil
	}
	shard := *shardFlag
	if !flagSet(fs, "shard") {
		if shard, err = shardFromEnv(os.Getenv("RANK"), os.Getenv("WORLD_SIZE")); err != nil {
			return err
		}
	}
	p, err := c.prefetch(ctx, paths, shard.index, shard.count)
	if err != nil {
		return err
	}
	if !*asJSON {
		printPlan(stdout, p)
	}
	if *detach {
		if *asJSON {
			return json.NewEncoder(stdout).Encode(p)
		}
		fmt.Fprintf(stdout, "started prefetch job %s; `s3cachefs status` shows its progress\n", p.ID)
		return nil
	}
	return followJob(c, p.ID, stdout, *asJSON, *interval)
}

// mountRelative turns PATHs into paths relative to the mount root.
// Absolute paths must lie under the mountpoint: one that does not is a
// usageError.
func mountRelative(mp string, in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, p := range in {
		if filepath.IsAbs(p) {
			rel, err := filepath.Rel(mp, filepath.Clean(p))
			if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				return nil, usagef("%s is not under the mount %s", p, mp)
			}
			p = rel
		}
		p = strings.Trim(filepath.ToSlash(filepath.Clean("/"+p)), "/")
		out = append(out, p)
	}
	return out, nil
}

// printPlan says what the job will fetch.
func printPlan(w io.Writer, p api.Job) {
	if p.Shard != "" {
		fmt.Fprintf(w, "shard %s of the objects:\n", p.Shard)
	}
	for _, f := range p.Folders {
		fmt.Fprintf(w, "%s: %d files, %s (%s already cached)\n", displayPath(f.Path), f.Files, humanBytes(f.Bytes), humanBytes(f.CachedAtStart))
	}
	if t := p.Totals(); t.Bytes == t.CachedAtStart {
		fmt.Fprintln(w, "nothing to fetch: everything is cached")
	}
}

func displayPath(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

// followJob shows the job's progress until it ends (or Ctrl-C).
func followJob(c *client, id string, w io.Writer, asJSON bool, every time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	tty := !asJSON && isTerminal(w)
	tick := time.NewTicker(every)
	defer tick.Stop()
	drawn := 0
	for {
		p, err := c.job(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return interrupted(w, id)
			}
			return err
		}
		switch {
		case asJSON:
			if err := json.NewEncoder(w).Encode(p); err != nil {
				return err
			}
		case tty:
			drawn = drawBars(w, p, drawn)
		default:
			for _, f := range p.Folders {
				fmt.Fprintln(w, progressLine(f, p.ElapsedSeconds))
			}
		}
		if p.State != "running" {
			return jobResult(w, p, asJSON)
		}
		select {
		case <-ctx.Done():
			return interrupted(w, id)
		case <-tick.C:
		}
	}
}

func interrupted(w io.Writer, id string) error {
	fmt.Fprintf(w, "\nprefetch job %s goes on in the daemon; `s3cachefs status` shows it, `s3cachefs prefetch --cancel %s` stops it\n", id, id)
	return errInterrupted
}

// jobResult reports how a job ended; anything but done is an error.
func jobResult(w io.Writer, p api.Job, asJSON bool) error {
	t := p.Totals()
	switch p.State {
	case "done":
		if !asJSON {
			fmt.Fprintf(w, "done: %d files, %s cached in %s\n", t.Files, humanBytes(t.Bytes), time.Duration(p.ElapsedSeconds*float64(time.Second)).Round(time.Millisecond))
		}
		return nil
	case "failed":
		return fmt.Errorf("prefetch job %s: %s: %s", p.ID, p.Error, strings.Join(p.Failed, ", "))
	default:
		return fmt.Errorf("prefetch job %s was %s", p.ID, p.State)
	}
}

// progressLine is the plain (non-terminal) progress form, one folder:
//
//	train: 1204/4667 files, 85197321/341985937 bytes, 1.9 GiB/s, ETA 2m05s
func progressLine(f api.Folder, elapsed float64) string {
	rate, eta := rateETA(f, elapsed)
	return fmt.Sprintf("%s: %d/%d files, %d/%d bytes, %s/s, ETA %s",
		displayPath(f.Path), f.FilesDone, f.Files, f.BytesDone, f.Bytes, humanBytes(int64(rate)), eta)
}

// rateETA is the download rate (bytes not cached at the start, per second)
// and the time left at that rate.
func rateETA(f api.Folder, elapsed float64) (float64, string) {
	fetched := f.BytesDone - f.CachedAtStart
	if elapsed <= 0 || fetched <= 0 {
		return 0, "-"
	}
	rate := float64(fetched) / elapsed
	left := time.Duration(float64(f.Bytes-f.BytesDone) / rate * float64(time.Second))
	return rate, left.Round(time.Second).String()
}

// drawBars redraws one bar per folder over the previous drawing.
func drawBars(w io.Writer, p api.Job, drawn int) int {
	if drawn > 0 {
		fmt.Fprintf(w, "\033[%dA", drawn)
	}
	for _, f := range p.Folders {
		rate, eta := rateETA(f, p.ElapsedSeconds)
		frac := 1.0
		if f.Bytes > 0 {
			frac = float64(f.BytesDone) / float64(f.Bytes)
		}
		const width = 24
		fill := int(frac * width)
		bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
		if fill < width {
			bar = strings.Repeat("=", fill) + ">" + strings.Repeat(" ", width-fill-1)
		}
		fmt.Fprintf(w, "\033[2K%-10s %d / %d files   %s / %s   %s/s   ETA %s  [%s]\n",
			displayPath(f.Path), f.FilesDone, f.Files, humanBytes(f.BytesDone), humanBytes(f.Bytes),
			humanBytes(int64(rate)), eta, bar)
	}
	return len(p.Folders)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// flagSet reports whether name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
