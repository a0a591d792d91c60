// Package test holds the end-to-end tests of s3cachefs: the built binary
// mounts real FUSE filesystems against a real S3 server process
// (versitygw), with data uploaded by the AWS CLI exactly as users do, and
// the tests read through the mounts with ordinary clients (os, ls, numpy).
//
// They need root, /dev/fuse, versitygw, /usr/bin/aws and /usr/bin/python3
// with numpy: `make deps` installs them. Run them with `make test`, or
// `go test ./test/`; TestMain builds cmd/s3cachefs with -race, unless
// S3CACHEFS_TEST_BIN names a binary to test instead. TestMemoryLimit also
// builds one without -race (memlimit_test.go says why).
package test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// suite is what TestMain prepares once for every test. It is set before
// m.Run and only read afterwards.
var suite struct {
	bin     string // the s3cachefs binary, built with -race
	dataset string // local copy of the generated dataset: train/, dev/
}

const (
	bucket = "demo-bucket"
	prefix = "cache/tusz" // the mounted prefix, as in the user's bucket
	source = "s3://" + bucket + "/" + prefix

	// cmdTimeout bounds every command a test runs.
	cmdTimeout = 2 * time.Minute
	// exitTimeout bounds how long a daemon may take to exit once its
	// mount is gone.
	exitTimeout = 30 * time.Second

	awsCLI = "/usr/bin/aws"
	python = "/usr/bin/python3"
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain builds the binary and the dataset, runs the tests, then fails the
// run if any test left a mount or a daemon behind (and cleans them up).
func runMain(m *testing.M) int {
	if msg := missingPrerequisite(); msg != "" {
		fmt.Fprintf(os.Stderr, "e2e tests cannot run: %s\n", msg)
		return 1
	}
	work, err := os.MkdirTemp("", "s3cachefs-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(work)
	suite.bin = filepath.Join(work, "s3cachefs")
	suite.dataset = filepath.Join(work, "dataset")
	if prebuilt := os.Getenv("S3CACHEFS_TEST_BIN"); prebuilt != "" {
		// For debugging against a binary built elsewhere. It is
		// copied so that daemonPIDs finds only this run's daemons.
		err = copyFile(prebuilt, suite.bin)
	} else {
		err = buildBinary(suite.bin)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if out, err := exec.Command(python, "gen_dataset.py", suite.dataset).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "generate dataset: %v\n%s", err, out)
		return 1
	}
	// Every t.TempDir, and so every mountpoint, lands under work: that
	// is how the leftover check below tells this package's mounts from
	// those of other packages' tests running at the same time.
	tmp := filepath.Join(work, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Setenv("TMPDIR", tmp)
	flag.Parse()
	stop := watchdog(tmp)
	code := m.Run()
	stop()
	if leftovers(tmp) {
		code = 1
	}
	return code
}

// missingPrerequisite names what this machine lacks to run the tests.
func missingPrerequisite() string {
	switch {
	case os.Geteuid() != 0:
		return "they must run as root (they mount FUSE filesystems and write to /run)"
	case !exists("/dev/fuse"):
		return "/dev/fuse is missing"
	case !exists(awsCLI):
		return awsCLI + " is missing: run `make deps`"
	case !exists(python):
		return python + " is missing: run `make deps`"
	}
	if err := exec.Command(python, "-c", "import numpy").Run(); err != nil {
		return "numpy is missing for " + python + ": run `make deps`"
	}
	return ""
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// buildBinary builds cmd/s3cachefs with the race detector, so that races in
// the daemon show up in its log (checked after every mount).
func buildBinary(out string) error {
	cmd := exec.Command("go", "build", "-race", "-o", out, "./cmd/s3cachefs")
	cmd.Dir = ".." // the module root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build s3cachefs: %v\n%s", err, b)
	}
	return nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return fmt.Errorf("S3CACHEFS_TEST_BIN: %w", err)
	}
	return os.WriteFile(to, b, 0o755)
}

// watchdog detaches every mount under dir and kills every daemon shortly
// before go test's -timeout would panic. A test stuck in a syscall on a
// mount then fails like any other, and TestMain still runs its leftover
// check; a panic would leave mounts and processes behind. It returns a
// func that disarms it.
func watchdog(dir string) (stop func()) {
	timeout := flag.Lookup("test.timeout").Value.(flag.Getter).Get().(time.Duration)
	if timeout <= 0 {
		return func() {}
	}
	margin := min(timeout/10, time.Minute)
	timer := time.AfterFunc(timeout-margin, func() {
		fmt.Fprintf(os.Stderr, "e2e: %v left before the -timeout of %v: detaching every test mount\n", margin, timeout)
		if ms, err := fuseMounts(); err == nil {
			for _, m := range ms {
				if strings.HasPrefix(m.Point, dir+"/") {
					_ = exec.Command("umount", "-l", m.Point).Run()
				}
			}
		}
		for _, pid := range daemonPIDs() {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		}
	})
	return func() { timer.Stop() }
}

// leftovers reports (and removes) s3cachefs mounts under dir, and
// daemons of the test binary still running.
func leftovers(dir string) bool {
	bad := false
	after, err := fuseMounts()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return true
	}
	for _, m := range after {
		if !strings.HasPrefix(m.Point, dir+"/") {
			continue
		}
		bad = true
		fmt.Fprintf(os.Stderr, "FAIL: a test left %s mounted (%s); unmounting it\n", m.Point, m.Source)
		if out, err := exec.Command("umount", "-l", m.Point).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "umount -l %s: %v %s\n", m.Point, err, out)
		}
	}
	for _, pid := range daemonPIDs() {
		if waitExit(pid, exitTimeout) == nil {
			continue
		}
		bad = true
		fmt.Fprintf(os.Stderr, "FAIL: a test left s3cachefs daemon pid %d running; killing it\n", pid)
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
	return bad
}
