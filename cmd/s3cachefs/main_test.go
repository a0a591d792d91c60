package main

import (
	"fmt"
	"os"
	"testing"
)

// TestMain refuses to run as a daemon. A test that calls run with a mount
// command line it expects refused would, were it accepted, start
// os.Executable() — this test binary — as the background daemon, which
// would run every test again, and so on.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "mount" {
		fmt.Fprintln(os.Stderr, "the cmd/s3cachefs test binary does not run as a daemon")
		os.Exit(1)
	}
	os.Exit(m.Run())
}
