// Command s3cachefs mounts an S3 prefix as a read-only tree whose bytes are
// cached on local SSD, and manages such mounts.
//
//	s3cachefs mount SOURCE MOUNTPOINT --cache-dir DIR [flags]
//	s3cachefs SOURCE MOUNTPOINT -o cache_dir=DIR[,OPTION...]   (mount -t fuse.s3cachefs)
//	s3cachefs prefetch [--mount M] [--detach] [--json] PATH...
//	s3cachefs status [--mount M] [--json]
//	s3cachefs verify [--mount M] [--deep] [--complete] [--json] [PATH...]
//	s3cachefs evict [--mount M] PATH...
//	s3cachefs drop [--purge] [--force] MOUNTPOINT
//	s3cachefs shared gc DIR --max-size SIZE [--grace DURATION]
//
// Flags are parsed into typed configs and validated here, and only here.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

const usage = `usage: s3cachefs COMMAND [flags]

commands:
  mount SOURCE MOUNTPOINT --cache-dir DIR   mount s3://bucket[/prefix] read-only, cached on SSD
  SOURCE MOUNTPOINT -o cache_dir=DIR,...    the same, as mount -t fuse.s3cachefs runs it (fstab)
  prefetch [--mount M] PATH...              fetch whole folders into the cache, with progress
  status [--mount M] [--json]               what the cache holds and how reads were served
  verify [--mount M] [--deep] [PATH...]     compare the cache with S3, per folder
  evict [--mount M] PATH...                 drop cached data of PATHs now
  drop [--purge] [--force] MOUNTPOINT       unmount and stop the daemon; --purge deletes the cache
  shared gc DIR --max-size SIZE             trim a shared cache folder, least recently used first

Run 's3cachefs COMMAND -h' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		args = []string{""} // the usage error below
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "mount":
		err = cmdMount(rest, stdout)
	case "prefetch":
		err = cmdPrefetch(rest, stdout)
	case "status":
		err = cmdStatus(rest, stdout)
	case "verify":
		err = cmdVerify(rest, stdout)
	case "evict":
		err = cmdEvict(rest, stdout)
	case "drop":
		err = cmdDrop(rest, stdout)
	case "shared":
		err = cmdShared(rest, stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "":
		err = usagef("missing command (want mount, prefetch, status, verify, evict, drop or shared; s3cachefs help shows all)")
	default:
		if strings.HasPrefix(cmd, "s3://") {
			// As mount.fuse3 runs it: s3cachefs SOURCE MOUNTPOINT -o
			// OPTIONS. Quiet on success, like other mount helpers.
			err = cmdMount(args, io.Discard)
			break
		}
		err = usagef("unknown command %q (want mount, prefetch, status, verify, evict, drop or shared)", cmd)
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errInterrupted):
		return 130
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "s3cachefs: %s\n", oneLine(err.Error()))
		return 2
	default:
		fmt.Fprintf(stderr, "s3cachefs: %s\n", oneLine(err.Error()))
		return 1
	}
}

// oneLine keeps an error message to one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// parseArgs parses flags that may stand before, between or after the
// positional arguments, and returns the positionals.
func parseArgs(fs *flag.FlagSet, args []string, help string) ([]string, error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(os.Stdout, help)
				fs.SetOutput(os.Stdout)
				fs.PrintDefaults()
				return nil, err
			}
			if refused := refusedValue(fs); refused != nil {
				return nil, usageError{refused.Error()}
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
