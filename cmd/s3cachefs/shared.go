package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"s3cachefs/blockcache/tier"
)

const sharedHelp = `usage: s3cachefs shared gc DIR --max-size SIZE [--grace DURATION]

Works on a shared cache tier (mount --shared-cache DIR).

  gc   trims the tier in DIR to SIZE, least recently used entries first.
       Safe while nodes read from it: an entry is moved into the tier's
       trash/ folder, and deleted by a run at least --grace later, so a
       node copying it reads all of it. Run it on any one node, e.g. from
       cron. For a bucket tier an S3 lifecycle rule does this (README).
`

const sharedGCHelp = `usage: s3cachefs shared gc DIR --max-size SIZE [--grace DURATION]

Trims the shared cache tier in DIR (the folder given to mount
--shared-cache, or its s3cachefs-tier-v1 folder) to SIZE, least recently
used entries first. Removed entries go into the tier's trash/ folder and
are deleted by a run at least --grace later; so are temporary files no
publisher has written to for --grace.

flags:
`

func cmdShared(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("shared needs a subcommand (want gc)")
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "gc":
		return cmdSharedGC(rest, stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, sharedHelp)
		return nil
	default:
		return usagef("unknown shared subcommand %q (want gc)", sub)
	}
}

func cmdSharedGC(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("shared gc", flag.ContinueOnError)
	maxSize := new(int64) // no default: required
	fs.Var(&typedValue[int64]{dst: maxSize, parse: func(s string) (int64, error) { return parseSize("--max-size", s) }},
		"max-size", "trim the tier to this `size` (400GiB, 2T, ...): required")
	grace := typedFlag(fs, "grace", "15m", "how long a removed entry stays readable to nodes copying it (a `duration`; 0 deletes at once)",
		durationIn("--grace", 0, 0, "a duration of 0 or more"))
	pos, err := parseArgs(fs, args, sharedGCHelp)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("shared gc needs exactly one DIR, got %d arguments", len(pos))
	}
	if strings.Contains(pos[0], "://") {
		return usagef("shared gc %s: only a folder tier is trimmed by gc; for a bucket tier an S3 lifecycle rule does this (see the README, Several nodes)", pos[0])
	}
	if !flagSet(fs, "max-size") {
		return usagef("shared gc needs --max-size SIZE")
	}
	dir, err := absPath(pos[0])
	if err != nil {
		return err
	}
	f, err := tier.FindFolder(dir)
	if err != nil {
		return err
	}
	st, err := f.GC(context.Background(), *maxSize, *grace, time.Now())
	printGC(stdout, dir, *maxSize, *grace, st)
	return err
}

// printGC says what a gc run did, in two lines.
func printGC(w io.Writer, dir string, maxSize int64, grace time.Duration, st tier.GCStats) {
	fmt.Fprintf(w, "shared cache %s: %d entries (%s) before, %d (%s) removed, %d (%s) left; limit %s\n",
		dir, st.Entries, humanBytes(st.Bytes), st.Removed, humanBytes(st.RemovedBytes), st.Left, humanBytes(st.LeftBytes), humanBytes(maxSize))
	fmt.Fprintf(w, "trash: %d files (%s) deleted, %d (%s) kept for the grace of %s; %d stale temporary files (%s) deleted\n",
		st.TrashDeleted, humanBytes(st.TrashDeletedBytes), st.TrashKept, humanBytes(st.TrashKeptBytes), grace, st.TmpDeleted, humanBytes(st.TmpDeletedBytes))
}
