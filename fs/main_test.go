package fs

import (
	"fmt"
	"os"
	"slices"
	"testing"

	"s3cachefs/fs/mounttab"
)

// TestMain fails the run if a test leaves one of its mounts behind. Only
// mounts with this process's source count: other packages' tests may
// mount and unmount s3cachefs trees at the same time.
func TestMain(m *testing.M) {
	before, err := ourMounts(testSource())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	after, err := ourMounts(testSource())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, mp := range after {
		if !slices.Contains(before, mp) {
			fmt.Fprintf(os.Stderr, "mount left behind: %s\n", mp)
			code = 1
		}
	}
	os.Exit(code)
}

// testSource is the FsName of this process's test mounts.
func testSource() string { return fmt.Sprintf("s3://fs-test-%d/prefix", os.Getpid()) }

// ourMounts returns the mount points of fuse.s3cachefs mounts from source.
func ourMounts(source string) ([]string, error) {
	ms, err := mounttab.Read()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.FSType == mounttab.FSType && m.Source == source {
			out = append(out, m.Point)
		}
	}
	return out, nil
}
