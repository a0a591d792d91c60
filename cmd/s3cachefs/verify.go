package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"s3cachefs/blockcache/prefetch"
)

const verifyHelp = `usage: s3cachefs verify [--mount M] [--deep] [--complete] [--json] [PATH...]

Compares a fresh S3 listing of each PATH (default: the whole mount) with the
cache: objects in S3, cached complete, partly cached, stale (an older
version is cached), missing. --deep reads back every complete file whose
ETag is a plain MD5 and checks it; damaged data is reported and dropped.
Exits 1 on any stale or damaged object, and with --complete unless
everything is cached.

flags:
`

// pathsRequest is the body of the control requests that act on paths.
type pathsRequest struct {
	Paths []string `json:"paths"`
	Deep  bool     `json:"deep,omitempty"`
}

// errMismatch ends a verify that found what the user asked to be told of.
var errMismatch = errors.New("verify found mismatches")

func cmdVerify(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	mount := mountFlag(fs)
	deep := fs.Bool("deep", false, "read back cached files and check them against their MD5 ETags")
	complete := fs.Bool("complete", false, "exit 1 unless every object is cached completely")
	asJSON := fs.Bool("json", false, "print the reports as JSON")
	pos, err := parseArgs(fs, args, verifyHelp)
	if err != nil {
		return err
	}
	mp, err := resolveMount(*mount)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		pos = []string{""}
	}
	paths, err := mountRelative(mp, pos)
	if err != nil {
		return err
	}
	var reports []prefetch.FolderReport
	if err := newClient(mp).post(context.Background(), "/verify", pathsRequest{Paths: paths, Deep: *deep}, &reports); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(reports); err != nil {
			return err
		}
	} else {
		printVerify(stdout, reports, *deep)
	}
	return verdict(stdout, reports, *complete, !*asJSON)
}

func printVerify(w io.Writer, reports []prefetch.FolderReport, deep bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, r := range reports {
		fmt.Fprintf(tw, "%s\t%d in S3\t%d cached\t%d partial\t%d stale\t%d missing\t%s", displayPath(r.Path),
			r.InS3, r.Cached, r.Partial, r.Stale, r.Missing, humanBytes(r.Bytes))
		if deep {
			fmt.Fprintf(tw, "\t%d checked, %d multipart unchecked", r.Checked, r.Unchecked)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	for _, r := range reports {
		for _, k := range r.Corrupt {
			fmt.Fprintf(w, "DAMAGED: %s (cached bytes differ from S3's; dropped, fetched again on next read)\n", k)
		}
	}
}

// verdict says OK or what is wrong, and returns errMismatch when the exit
// status must be 1.
func verdict(w io.Writer, reports []prefetch.FolderReport, complete, say bool) error {
	var problems []string
	for _, r := range reports {
		name := displayPath(r.Path)
		if r.Stale > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d stale", name, r.Stale))
		}
		if len(r.Corrupt) > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d damaged", name, len(r.Corrupt)))
		}
		if complete && r.Cached != r.InS3 {
			problems = append(problems, fmt.Sprintf("%s: %d of %d not cached", name, r.InS3-r.Cached, r.InS3))
		}
	}
	if len(problems) == 0 {
		if say {
			fmt.Fprintln(w, "OK")
		}
		return nil
	}
	return fmt.Errorf("%w: %s", errMismatch, strings.Join(problems, "; "))
}

const evictHelp = `usage: s3cachefs evict [--mount M] PATH...

Drops the cached data of every object under the PATHs now, and releases
their prefetch pins. Files open right now are kept.

flags:
`

// evictReply is the answer to POST /evict.
type evictReply struct {
	Dropped int `json:"dropped"`
	Busy    int `json:"busy"`
}

func cmdEvict(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("evict", flag.ContinueOnError)
	mount := mountFlag(fs)
	pos, err := parseArgs(fs, args, evictHelp)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("evict needs at least one PATH")
	}
	mp, paths, err := resolvePaths(*mount, pos)
	if err != nil {
		return err
	}
	var r evictReply
	if err := newClient(mp).post(context.Background(), "/evict", pathsRequest{Paths: paths}, &r); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "evicted %d objects", r.Dropped)
	if r.Busy > 0 {
		fmt.Fprintf(stdout, "; kept %d that are open", r.Busy)
	}
	fmt.Fprintln(stdout)
	return nil
}
