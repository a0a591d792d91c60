// run.go sets the run up (work dir, binary, dataset, server, proxy), runs
// the figures, prints the table, and tears everything down.

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"s3cachefs/fs/mounttab"
	"s3cachefs/test/s3server"
)

// Tools the peers need. /usr/bin/aws is Debian's CLI, not a pyenv shim.
const (
	awsCLI = "/usr/bin/aws"
	rclone = "rclone"
)

// bench is one run: its config, what it started, and what it measured.
type bench struct {
	cfg    config
	spec   spec
	start  time.Time
	repo   string // the checkout (where go.mod is)
	bin    string // s3cachefs built from the checkout
	server *s3server.Server
	proxy  *s3server.Proxy
	clean  cleanups
	res    results
}

// path returns a path inside the work dir.
func (b *bench) path(elem ...string) string {
	return filepath.Join(append([]string{b.cfg.work}, elem...)...)
}

// logf prints progress with the time since the start.
func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
}

// Work dir entries made by a run; only these are removed at the end.
var workEntries = []string{"s3cachefs", "scale-local", "dataset", "dataset.spec", "s3root", "s3root.spec", "tmp", "run", "home", "logs", "baseline", "npz", "npz.spec", "s3root-npz.spec", "trainer.py"}

func run(ctx context.Context, cfg config) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (FUSE mounts, /proc/sys/vm/drop_caches)")
	}
	for _, tool := range []string{awsCLI, rclone, "fusermount3"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: run `make deps bench-deps`", tool)
		}
	}
	gw, err := s3server.FindBinary()
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, spec: fullSpec(), start: time.Now()}
	if cfg.quick {
		b.spec = quickSpec()
	}
	defer func() { err = errors.Join(err, b.teardown(err != nil)) }()
	if err := b.prepare(ctx, gw); err != nil {
		return err
	}
	if err := b.figures(ctx); err != nil {
		return err
	}
	table := b.render()
	fmt.Print(table)
	if err := os.WriteFile(cfg.out, []byte(table), 0o644); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	b.logf("table written to %s", cfg.out)
	return nil
}

// prepare builds the binary, makes the dataset and starts the server and
// the proxy.
func (b *bench) prepare(ctx context.Context, gw string) error {
	for _, d := range []string{"tmp", "run", "home", "logs"} {
		if err := os.MkdirAll(b.path(d), 0o700); err != nil {
			return err
		}
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" {
		return fmt.Errorf("run from the s3cachefs checkout (go env GOMOD: %v)", err)
	}
	b.repo = filepath.Dir(strings.TrimSpace(string(gomod)))
	if err := b.buildBin(ctx); err != nil {
		return err
	}
	if b.onlyOptIn() {
		b.logf("opt-in figures only: no dataset, versitygw or proxy of the default figures")
		return nil
	}
	b.logf("dataset: %s", b.spec)
	if err := generate(ctx, b.path("dataset"), b.spec); err != nil {
		return err
	}
	if !stamped(b.path("s3root.spec"), b.spec.String()) {
		if err := os.RemoveAll(b.path("s3root")); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(b.path("s3root"), 0o700); err != nil {
		return err
	}
	if err := b.startServer(gw); err != nil {
		return err
	}
	b.logf("versitygw on %s; uploading (skipped when cached)", b.server.Endpoint)
	if err := b.upload(ctx, b.path("dataset"), b.spec); err != nil {
		return err
	}
	if err := b.startProxy(b.cfg.ttfb, b.cfg.rate); err != nil {
		return err
	}
	b.logf("proxy on %s: %v to first byte, %s per connection", b.proxy.Endpoint, b.cfg.ttfb, fmtRate(b.cfg.rate))
	return nil
}

// onlyOptIn reports whether -only names opt-in figures alone, which set up
// their own server (the scale figure's synthetic one).
func (b *bench) onlyOptIn() bool {
	for _, k := range b.cfg.only {
		if !slices.Contains(optInKeys, k) {
			return false
		}
	}
	return len(b.cfg.only) > 0
}

// teardown undoes everything, checks that no FUSE mount is left under the
// work dir, and removes the work dir unless -keep (keeping the logs when
// the run failed).
func (b *bench) teardown(failed bool) error {
	b.clean.closeAll(b.logf)
	left, err := fuseMountsUnder(b.cfg.work)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		// Removing files under a live mount would reach into it.
		return fmt.Errorf("FUSE mounts left behind, work dir kept: %s", strings.Join(left, ", "))
	}
	b.logf("no FUSE mount left under %s", b.cfg.work)
	if b.cfg.keep {
		return nil
	}
	var errs []error
	for _, e := range workEntries {
		if failed && e == "logs" {
			continue
		}
		errs = append(errs, os.RemoveAll(b.path(e)))
	}
	if failed {
		b.logf("logs kept in %s", b.path("logs"))
	} else {
		_ = os.Remove(b.cfg.work) // only if empty: it may hold the user's files
	}
	return errors.Join(errs...)
}

// fuseMountsUnder lists FUSE mounts (s3cachefs's, rclone's) at or under
// dir.
func fuseMountsUnder(dir string) ([]string, error) {
	entries, err := mounttab.Read()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.FSType, "fuse") {
			continue
		}
		if e.Point == dir || strings.HasPrefix(e.Point, dir+"/") {
			out = append(out, e.Point)
		}
	}
	return out, nil
}

// isMounted reports whether dir is a FUSE mountpoint now.
func isMounted(dir string) bool {
	left, _ := fuseMountsUnder(dir)
	for _, m := range left {
		if m == dir {
			return true
		}
	}
	return false
}

// childEnv is the environment of every process the run starts: the
// machine's minus anything AWS, rclone or s3cachefs, plus the server's
// keys, an empty HOME and the run's own control-socket dir.
func (b *bench) childEnv(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "RCLONE_") ||
			strings.HasPrefix(kv, "S3CACHEFS_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		out = append(out, kv)
	}
	home := b.path("home")
	if b.server != nil {
		out = append(out, b.server.Env()...)
	}
	out = append(out,
		"AWS_CONFIG_FILE="+filepath.Join(home, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(home, "no-aws-credentials"),
		"AWS_PAGER=", "HOME="+home,
		"S3CACHEFS_RUNTIME_DIR="+b.path("run"),
	)
	return append(out, extra...)
}

// runCmd runs a command to completion with the child environment and
// returns its stdout; a failure carries the end of its stderr.
func (b *bench) runCmd(ctx context.Context, name string, args ...string) (string, error) {
	return b.runCmdEnv(ctx, nil, name, args...)
}

func (b *bench) runCmdEnv(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = b.childEnv(env...)
	cmd.Dir = "/" // never inside a mount, so no command keeps one busy
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name),
			strings.Join(args, " "), err, lastBytes(stderr.Bytes(), 2000))
	}
	return stdout.String(), nil
}

// awsArgs prefixes args with the endpoint for /usr/bin/aws.
func (b *bench) awsArgs(endpoint string, args ...string) []string {
	return append([]string{"--endpoint-url", endpoint}, args...)
}

// lastBytes is the end of b, trimmed, for error messages.
func lastBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}

// buildBin builds the checkout's s3cachefs into the work dir, or copies the
// one -bin names there.
func (b *bench) buildBin(ctx context.Context) error {
	b.bin = b.path("s3cachefs")
	if b.cfg.bin != "" {
		b.logf("measuring %s (-bin), copied to %s", b.cfg.bin, b.bin)
		if out, err := exec.CommandContext(ctx, "cp", b.cfg.bin, b.bin).CombinedOutput(); err != nil {
			return fmt.Errorf("-bin: %w: %s", err, out)
		}
		return nil
	}
	b.logf("building %s", b.bin)
	build := exec.CommandContext(ctx, "go", "build", "-o", b.bin, "./cmd/s3cachefs")
	build.Dir = b.repo
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build s3cachefs: %w\n%s", err, out)
	}
	return nil
}
