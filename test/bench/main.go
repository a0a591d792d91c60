// Command bench is `make bench`: it measures s3cachefs side by side with
// local disk, a single-connection GET, `aws s3 sync`, `rclone copy` and
// `rclone mount --vfs-cache-mode full` for every target of issue 5, then
// checked reads and reads inside gVisor (checks.go, gvisor.go; issue 10)
// and a PyTorch trainer's first and later epochs (trainer.go; issue 11),
// and prints a markdown table of medians and ratios. The opt-in scale
// figure (scale.go; issue 13), run only with -only scale, measures folders
// of 10^6 keys, many small files and a full cache against a synthetic S3
// server (s3server.Fake with generated buckets) instead of versitygw.
//
// Everything runs on 127.0.0.1 and is set up by the program in its work
// dir: a versitygw S3 server, a proxy in front of it that models S3 (a
// delay to first byte and a per-connection bandwidth limit) and counts
// requests (both from test/s3server, as the end-to-end tests use them), a generated dataset, and the s3cachefs binary built from this
// checkout. Every client goes through the proxy; the upload does not.
//
// It must run as root: it mounts FUSE filesystems and drops the page cache
// (/proc/sys/vm/drop_caches) between cold and warm figures. Every mount and
// process it starts is stopped on exit, also after an error or Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// config is the command line.
type config struct {
	work       string        // work dir; holds everything the run makes
	keep       bool          // keep the work dir (dataset, S3 data) for a quick rerun
	runs       int           // runs per short figure; medians are reported
	ttfb       time.Duration // proxy delay before the first byte of each response
	rate       float64       // proxy bandwidth per connection, bytes/s (0: unlimited)
	readers    int           // parallel readers for split reads
	quick      bool          // small dataset for a smoke run
	mountFlags []string      // extra flags for `s3cachefs mount`
	only       []string      // figures to measure (keys); empty: all
	out        string        // file the table is written to
	baseline   string        // commit measured beside this build by the checks figure ("": none)
	perf       string        // folder for perf profiles of the trainer figure's daemons ("": none)
	bin        string        // s3cachefs binary to measure ("": build the checkout's)
	args       []string      // the command line, for the report
	scale      scaleConfig   // sizes of the opt-in scale figure (scale.go)
}

const usage = `usage: go run ./test/bench [flags]   (or: make bench BENCH_FLAGS="...")

Measures s3cachefs against local disk and its peers on 127.0.0.1 and prints
a markdown table. Needs root, FUSE, versitygw, /usr/bin/aws and rclone.

flags:
`

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	cfg := config{args: args}
	var rateMB float64
	var mountFlags string
	fs.StringVar(&cfg.work, "work", "/var/tmp/s3cachefs-bench", "work dir (needs ~15 GB; ~1 GB with -quick)")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the work dir: a rerun reuses the dataset and S3 data")
	fs.IntVar(&cfg.runs, "runs", 3, "runs of each short figure (medians are reported)")
	fs.DurationVar(&cfg.ttfb, "ttfb", 20*time.Millisecond, "proxy delay before the first byte of every response")
	fs.Float64Var(&rateMB, "rate", 90, "proxy bandwidth per connection in MB/s (1e6 bytes/s); 0 = unlimited")
	fs.IntVar(&cfg.readers, "readers", 8, "parallel readers for reads of a split")
	fs.BoolVar(&cfg.quick, "quick", false, "small dataset (8+4 files of 8 MiB, 200 small files) for a smoke run")
	fs.StringVar(&mountFlags, "mount-flags", "", "extra flags for `s3cachefs mount`, e.g. \"--max-fetches 64\"")
	var only string
	fs.StringVar(&only, "only", "", "measure only these figures, comma-separated: "+strings.Join(figureKeys, ",")+
		" (and the opt-in "+strings.Join(optInKeys, ",")+", never run by default)")
	cfg.scale.flags(fs)
	fs.StringVar(&cfg.out, "out", "", "also write the table to this file (default WORK/../s3cachefs-bench.md)")
	fs.StringVar(&cfg.baseline, "checks-baseline", "da4bcf2", "commit whose daemon reads (spliced, unchecked) the checks figure measures beside this build's; \"\" for none")
	fs.StringVar(&cfg.perf, "perf", "", "record `perf record -g` of each daemon of the trainer figure into this folder (perf-MODE-RUN.data)")
	fs.StringVar(&cfg.bin, "bin", "", "measure this s3cachefs binary instead of building the checkout's (to compare builds)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if cfg.runs < 1 || cfg.readers < 1 || rateMB < 0 || cfg.ttfb < 0 {
		return cfg, errors.New("-runs and -readers must be at least 1, -rate and -ttfb not negative")
	}
	cfg.rate = rateMB * 1e6
	if only != "" {
		for _, k := range strings.Split(only, ",") {
			if !slices.Contains(figureKeys, k) && !slices.Contains(optInKeys, k) {
				return cfg, fmt.Errorf("-only: unknown figure %q (have %s)", k, strings.Join(append(figureKeys, optInKeys...), ","))
			}
			cfg.only = append(cfg.only, k)
		}
	}
	cfg.mountFlags = strings.Fields(mountFlags)
	abs, err := filepath.Abs(cfg.work)
	if err != nil {
		return cfg, err
	}
	cfg.work = abs
	if cfg.out == "" {
		cfg.out = filepath.Join(filepath.Dir(abs), "s3cachefs-bench.md")
	}
	return cfg, nil
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == gvisorChildArg {
		// Inside a gVisor sandbox that figGVisor started.
		os.Exit(gvisorChild(os.Args[2]))
	}
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	// The first Ctrl-C cancels the run and lets cleanup unmount
	// everything; stop() restores the default so a second one kills.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
