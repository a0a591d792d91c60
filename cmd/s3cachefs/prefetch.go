package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"s3cachefs/blockcache/prefetch"
)

const prefetchHelp = `usage: s3cachefs prefetch [--mount M] [--detach] [--json] PATH...
       s3cachefs prefetch [--mount M] --cancel JOB
       s3cachefs prefetch [--mount M] --unpin PATH...

Fetches every object under the PATHs (folders or files, relative to the
mount root or absolute under it) into the cache and pins them. The job runs
inside the daemon: Ctrl-C stops this display, not the job; --cancel stops it.

flags:
`

// errInterrupted ends a progress display on Ctrl-C; the job goes on.
var errInterrupted = errors.New("interrupted")

func cmdPrefetch(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("prefetch", flag.ContinueOnError)
	mount := mountFlag(fs)
	detach := fs.Bool("detach", false, "start the job and return at once")
	asJSON := fs.Bool("json", false, "print progress as one JSON object per line")
	cancel := fs.String("cancel", "", "cancel the job with this ID")
	unpin := fs.Bool("unpin", false, "release the pins on PATHs instead of fetching them")
	interval := fs.Duration("interval", time.Second, "how often progress is shown")
	pos, err := parseArgs(fs, args, prefetchHelp)
	if err != nil {
		return err
	}
	if *interval <= 0 {
		return usagef("--interval must be positive")
	}
	// --cancel and --unpin are their own actions: the display flags mean
	// nothing to them, and --cancel with --unpin would be two actions.
	for _, action := range []string{"cancel", "unpin"} {
		if !flagSet(fs, action) {
			continue
		}
		for _, other := range []string{"cancel", "unpin", "detach", "json", "interval"} {
			if other != action && flagSet(fs, other) {
				return usagef("--%s cannot be combined with --%s", action, other)
			}
		}
	}
	mp, err := resolveMount(*mount)
	if err != nil {
		return err
	}
	c := newClient(mp)
	ctx := context.Background()
	if *cancel != "" {
		if len(pos) > 0 {
			return usagef("--cancel takes no PATHs")
		}
		if err := c.do(ctx, "POST", "/jobs/"+url.PathEscape(*cancel)+"/cancel", nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "cancelled prefetch job %s\n", *cancel)
		return nil
	}
	if len(pos) == 0 {
		return usagef("prefetch needs at least one PATH")
	}
	paths, err := mountRelative(mp, pos)
	if err != nil {
		return err
	}
	var p prefetch.Progress
	if *unpin {
		var r map[string]int
		if err := c.post(ctx, "/unpin", pathsRequest{Paths: paths}, &r); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "unpinned %d objects; eviction may remove them now\n", r["objects"])
		return nil
	}
	if err := c.post(ctx, "/prefetch", pathsRequest{Paths: paths}, &p); err != nil {
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
// Absolute paths must lie under the mountpoint.
func mountRelative(mp string, in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, p := range in {
		if filepath.IsAbs(p) {
			rel, err := filepath.Rel(mp, filepath.Clean(p))
			if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				return nil, fmt.Errorf("%s is not under the mount %s", p, mp)
			}
			p = rel
		}
		p = strings.Trim(filepath.ToSlash(filepath.Clean("/"+p)), "/")
		out = append(out, p)
	}
	return out, nil
}

// printPlan says what the job will fetch.
func printPlan(w io.Writer, p prefetch.Progress) {
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
		var p prefetch.Progress
		if err := c.do(ctx, "GET", "/jobs/"+url.PathEscape(id), &p); err != nil {
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
func jobResult(w io.Writer, p prefetch.Progress, asJSON bool) error {
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
func progressLine(f prefetch.FolderProgress, elapsed float64) string {
	rate, eta := rateETA(f, elapsed)
	return fmt.Sprintf("%s: %d/%d files, %d/%d bytes, %s/s, ETA %s",
		displayPath(f.Path), f.FilesDone, f.Files, f.BytesDone, f.Bytes, humanBytes(int64(rate)), eta)
}

// rateETA is the download rate (bytes not cached at the start, per second)
// and the time left at that rate.
func rateETA(f prefetch.FolderProgress, elapsed float64) (float64, string) {
	fetched := f.BytesDone - f.CachedAtStart
	if elapsed <= 0 || fetched <= 0 {
		return 0, "-"
	}
	rate := float64(fetched) / elapsed
	left := time.Duration(float64(f.Bytes-f.BytesDone) / rate * float64(time.Second))
	return rate, left.Round(time.Second).String()
}

// drawBars redraws one bar per folder over the previous drawing.
func drawBars(w io.Writer, p prefetch.Progress, drawn int) int {
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
