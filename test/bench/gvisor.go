// gvisor.go measures s3cachefs inside a gVisor sandbox, as on Modal: the
// bench re-runs itself inside `runsc do` (gvisorchild.go), which starts an
// S3 server and the modelling proxy in there (the sandbox has only its own
// loopback), writes a set of files into a plain folder of the sandbox and
// uploads them, and times cold and cached reads through the mount against
// reads of the plain files. This side starts the sandbox and takes its
// figures.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"s3cachefs/test/s3server"
)

// gvisorChildArg as the first argument makes the bench the sandbox's side.
const gvisorChildArg = "gvisor-child"

// gvisorResultPrefix starts the line the sandbox's side prints its result on.
const gvisorResultPrefix = "GVISOR-RESULT "

// gvisorJob is what the sandbox's side is asked to do, as JSON in its
// second argument.
type gvisorJob struct {
	Work       string // work dir inside the sandbox (in its overlay)
	Bin        string // s3cachefs
	Versitygw  string // versitygw
	Files      int    // the set: Files files of FileSize seeded random bytes
	FileSize   int64
	Seed       uint64
	TTFB       time.Duration
	Rate       float64
	Readers    int
	Runs       int
	MountFlags []string
}

// gvisorResult is what the sandbox's side measured.
type gvisorResult struct {
	Bytes              int64           // bytes of the set; every sample reads all of it
	Cold, Cached       []time.Duration // through the mount: empty cache / cache full
	Plain              []time.Duration // the plain copy, alternating with Cached
	ColdCPU, CachedCPU cpuJSON         // the daemon's, over all Cold / Cached samples
	Upload             time.Duration   // uploading the set inside the sandbox
	ReadMode           string
	FUSE               string
	Fallbacks          []string
	BlocksChecked      int64    // during the cached samples
	Reads, ReadBytes   int64    // FUSE READs the daemon served from SSD then, and their bytes
	MountFailures      []string // mounts that failed and were tried again
	Mounts             int      // mounts made, failed ones included
}

// cpuJSON is a cpuUse that goes through JSON.
type cpuJSON struct {
	User, Sys time.Duration
	Bytes     int64
}

func (c cpuJSON) use() cpuUse { return cpuUse{user: c.User, sys: c.Sys, bytes: c.Bytes} }

// gvisorFigures is the gVisor figure as the table shows it.
type gvisorFigures struct {
	runsc              string // which build
	files              int
	fileSize           int64
	cold, cached       stat
	plain              stat
	coldCPU, cachedCPU cpuUse
	res                gvisorResult
}

// runscPath is the current gVisor build `make deps` installs: $RUNSC, else
// $(go env GOPATH)/bin/runsc.
func runscPath() (string, error) {
	p := os.Getenv("RUNSC")
	if p == "" {
		out, err := exec.Command("go", "env", "GOPATH").Output()
		if err != nil {
			return "", fmt.Errorf("go env GOPATH: %w", err)
		}
		p = filepath.Join(filepath.SplitList(strings.TrimSpace(string(out)))[0], "bin", "runsc")
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("gVisor's runsc (%s): %w: run `make deps`", p, err)
	}
	return p, nil
}

// runscVersion names the build: its module version, from `go version -m`.
func runscVersion(bin string) string {
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err == nil {
		if m := regexp.MustCompile(`(?m)^\s+mod\s+\S+\s+(\S+)`).FindSubmatch(out); m != nil {
			return "gvisor.dev/gvisor " + string(m[1])
		}
	}
	return filepath.Base(bin) + " (unknown version)"
}

// gvisorSet is the size of the set the figure reads: a few hundred MiB,
// as cold reads in the sandbox run at tens of MB/s here.
func (b *bench) gvisorSet() (files int, size int64) {
	if b.cfg.quick {
		return 4, 8 << 20
	}
	return 16, 16 << 20
}

func (b *bench) figGVisor(ctx context.Context) error {
	runsc, err := runscPath()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	gw, err := s3server.FindBinary()
	if err != nil {
		return err
	}
	job := gvisorJob{
		Work: "/tmp/s3cachefs-bench-gvisor", Bin: b.bin, Versitygw: gw, Seed: b.spec.Seed,
		TTFB: b.cfg.ttfb, Rate: b.cfg.rate, Readers: b.cfg.readers, Runs: b.cfg.runs, MountFlags: b.cfg.mountFlags,
	}
	job.Files, job.FileSize = b.gvisorSet()
	arg, err := json.Marshal(job)
	if err != nil {
		return err
	}
	// runsc keeps sockets in --root: the path must stay short.
	root, err := os.MkdirTemp("/tmp", "runsc-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	fig := &gvisorFigures{runsc: runscVersion(runsc), files: job.Files, fileSize: job.FileSize}
	b.logf("%s: %d files of %d MiB, inside the sandbox", fig.runsc, fig.files, fig.fileSize/mib)
	cmd := exec.CommandContext(ctx, runsc, "--network=none", "--ignore-cgroups", "--root", root,
		"do", self, gvisorChildArg, string(arg))
	cmd.Dir = "/"
	// Old runsc builds keep a socket in $TMPDIR too.
	cmd.Env = append(b.childEnv(), "TMPDIR=/tmp")
	// Pipes, never a terminal: gVisor loses output written to one.
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &prefixLines{prefix: "    gvisor| "}
	// runsc do passes SIGTERM on to the sandbox, which then stops.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("runsc do: %w\n%s", err, lastBytes(stdout.Bytes(), 2000))
	}
	var res gvisorResult
	line, ok := resultLine(stdout.String())
	if !ok {
		return fmt.Errorf("the sandbox printed no result:\n%s", lastBytes(stdout.Bytes(), 2000))
	}
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		return fmt.Errorf("the sandbox's result: %w", err)
	}
	for _, s := range []struct {
		st *stat
		ds []time.Duration
	}{{&fig.cold, res.Cold}, {&fig.cached, res.Cached}, {&fig.plain, res.Plain}} {
		for _, d := range s.ds {
			s.st.add(d, res.Bytes)
		}
	}
	if fig.cached.empty() || fig.plain.empty() || fig.cold.empty() {
		return errors.New("the sandbox measured nothing")
	}
	fig.coldCPU, fig.cachedCPU, fig.res = res.ColdCPU.use(), res.CachedCPU.use(), res
	b.res.gvisor = fig
	b.logf("gVisor: cold %s [%s], cached %s [%s], plain file %s [%s]; daemon cold %s, cached %s; mode %s, %s, fallbacks %q; %d of %d mounts failed",
		fig.cold, fig.cold.all(), fig.cached, fig.cached.all(), fig.plain, fig.plain.all(),
		fig.coldCPU, fig.cachedCPU, res.ReadMode, res.FUSE, res.Fallbacks, len(res.MountFailures), res.Mounts)
	return nil
}

// resultLine finds the result the sandbox printed.
func resultLine(out string) (string, bool) {
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, gvisorResultPrefix); ok {
			return rest, true
		}
	}
	return "", false
}

// prefixLines writes each whole line it is given to stderr with a prefix.
type prefixLines struct {
	prefix string
	mu     sync.Mutex // guards buf
	buf    []byte
}

func (w *prefixLines) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		fmt.Fprintf(os.Stderr, "%s%s\n", w.prefix, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}
