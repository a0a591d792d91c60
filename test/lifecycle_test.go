package test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"s3cachefs/fs/mounttab"
)

// TestStatus checks that status --json names the mount and that its
// counters move as reads are served from S3 and then from the SSD.
func TestStatus(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	m := e.mount(t)

	s := e.status(t, m)
	if strings.TrimSuffix(s.Source, "/") != source || s.Mountpoint != m.dir || s.CacheDir != m.cache {
		t.Errorf("status names source %q, mountpoint %q, cache dir %q; want %q, %q, %q",
			s.Source, s.Mountpoint, s.CacheDir, source, m.dir, m.cache)
	}
	if !alive(s.PID) {
		t.Errorf("status pid %d is not a running process", s.PID)
	}
	if s.Objects != 0 || s.CachedBytes != 0 || s.Hits != 0 || s.Misses != 0 || s.BytesFromS3 != 0 ||
		s.BytesFromSSD != 0 || s.OpenFiles != 0 || s.S3GetRequests != 0 {
		t.Errorf("status of a fresh mount with an empty cache: %+v, want zero counters", s)
	}
	if mi := mountsAt(t, m.dir); len(mi) != 1 || mi[0].FSType != mounttab.FSType || strings.TrimSuffix(mi[0].Source, "/") != source {
		t.Errorf("mount table at %s: %+v, want one fuse.s3cachefs mount of %s", m.dir, mi, source)
	}

	name := npzNames(files, "train")[0]
	size := int64(len(files[name]))
	readAll(t, m.dir, map[string][]byte{name: files[name]})
	s = e.status(t, m)
	if s.Misses == 0 || s.BytesFromS3 < size || s.S3GetRequests == 0 {
		t.Errorf("after a cold read of %d bytes: %d misses, %d bytes from S3, %d GETs; want misses, >= %d bytes, GETs",
			size, s.Misses, s.BytesFromS3, s.S3GetRequests, size)
	}
	if got := e.proxy.Counts().GetObject; s.S3GetRequests > got {
		t.Errorf("status counts %d GETs, but only %d reached S3", s.S3GetRequests, got)
	}
	if s.Objects < 1 || s.CompleteObjects < 1 || s.CachedBytes < size {
		t.Errorf("after reading %s whole: %d objects, %d complete, %d bytes cached; want >= 1, >= 1, >= %d",
			name, s.Objects, s.CompleteObjects, s.CachedBytes, size)
	}

	e.waitNoOpenFiles(t, m)
	f, err := os.Open(filepath.Join(m.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if got := e.status(t, m).OpenFiles; got != 1 {
		t.Errorf("open_files with one file open: %d", got)
	}
	f.Close()
	e.waitNoOpenFiles(t, m)

	// With the kernel's page cache dropped the next read reaches the
	// daemon, which must serve it from the SSD.
	before := s
	dropped := dropKernelCaches(t)
	readAll(t, m.dir, map[string][]byte{name: files[name]})
	s = e.status(t, m)
	if s.BytesFromS3 != before.BytesFromS3 || s.Misses != before.Misses {
		t.Errorf("a cached read moved bytes_from_s3 %d → %d, misses %d → %d; want no change",
			before.BytesFromS3, s.BytesFromS3, before.Misses, s.Misses)
	}
	// A complete file is read by the kernel itself in passthrough mode;
	// else the read must reach the daemon, which serves it from the SSD.
	switch {
	case s.ReadMode == "passthrough" && s.PassthroughOpens <= before.PassthroughOpens:
		t.Errorf("passthrough_opens %d → %d after opening a complete file", before.PassthroughOpens, s.PassthroughOpens)
	case s.ReadMode != "passthrough" && dropped && (s.BytesFromSSD < before.BytesFromSSD+size || s.Hits <= before.Hits):
		t.Errorf("bytes_from_ssd %d → %d, hits %d → %d after a read of %d bytes that had to reach the daemon",
			before.BytesFromSSD, s.BytesFromSSD, before.Hits, s.Hits, size)
	}

	r := e.run(t, "status", "--mount", m.dir)
	if r.code != 0 || !strings.Contains(r.stdout, m.dir) {
		t.Errorf("status (text) does not name the mountpoint: %s", r)
	}
}

// TestDropRefusesOpenFiles checks that drop refuses while a file is open,
// naming that fact and leaving the mount working, and that --force drops.
func TestDropRefusesOpenFiles(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	m := e.mount(t)
	name := npzNames(files, "dev")[0]
	f, err := os.Open(filepath.Join(m.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	r := e.run(t, "drop", m.dir)
	if r.code != 1 || !strings.Contains(strings.ToLower(r.stderr), "open") {
		t.Errorf("drop with an open file: %s\nwant exit 1 and a message that files are open", r)
	}
	if !isMounted(t, m.dir) || !alive(m.pid) {
		t.Fatalf("drop refused but the mount or daemon is gone")
	}
	buf := make([]byte, 100)
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, files[name][:100]) {
		t.Errorf("reading the open file after a refused drop: %v", err)
	}

	e.drop(t, m, "--force")
	if n := e.runtimeEntries(t); len(n) != 0 {
		t.Errorf("runtime dir after drop --force: %v, want empty", n)
	}
}

// TestDropPurge checks that drop --purge deletes the cached data.
func TestDropPurge(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	m := e.mount(t)
	readAll(t, m.dir, files)
	if n := filesUnder(t, m.cache); n == 0 {
		t.Fatalf("the cache dir holds no files after reading everything")
	}
	e.waitNoOpenFiles(t, m)
	e.drop(t, m, "--purge")
	if n := filesUnder(t, m.cache); n != 0 {
		t.Errorf("the cache dir holds %d files after drop --purge, want none", n)
	}

	// The next mount starts cold.
	m = e.mountAt(t, m.dir, m.cache)
	e.proxy.Reset()
	name := npzNames(files, "dev")[0]
	readAll(t, m.dir, map[string][]byte{name: files[name]})
	if c := e.proxy.Counts(); c.GetObject == 0 {
		t.Errorf("a read after drop --purge made no GET: the cache was not purged")
	}
}

// filesUnder counts the regular files under dir; a missing dir has none.
func filesUnder(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return nil
		}
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestUmountStopsDaemon checks that a plain umount stops the daemon
// cleanly: it exits, its socket goes, and the cache it kept is intact for
// the next mount.
func TestUmountStopsDaemon(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	m := e.mount(t)
	name := npzNames(files, "train")[0]
	readAll(t, m.dir, map[string][]byte{name: files[name]})
	e.waitNoOpenFiles(t, m)

	if out, err := exec.Command("umount", m.dir).CombinedOutput(); err != nil {
		t.Fatalf("umount %s: %v\n%s", m.dir, err, out)
	}
	if err := waitExit(m.pid, exitTimeout); err != nil {
		t.Fatal(err)
	}
	if isMounted(t, m.dir) {
		t.Errorf("%s still mounted after umount", m.dir)
	}
	if n := e.runtimeEntries(t); len(n) != 0 {
		t.Errorf("runtime dir after umount: %v, want empty", n)
	}

	m = e.mountAt(t, m.dir, m.cache)
	e.proxy.Reset()
	readAll(t, m.dir, map[string][]byte{name: files[name]})
	if c := e.proxy.Counts(); c.GetObject != 0 {
		t.Errorf("after umount and remount, a cached file took %d GETs, want none", c.GetObject)
	}
}

// TestForegroundSignals checks that a --foreground daemon unmounts and
// exits 0 on SIGTERM and on SIGINT.
func TestForegroundSignals(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	name := npzNames(files, "dev")[0]
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			dir, cache := newMountpoint(t), t.TempDir()
			fg := e.startForeground(t, dir, cache)
			readAll(t, dir, map[string][]byte{name: files[name]})
			e.waitNoOpenFiles(t, &mounted{dir: dir, cache: cache})
			if err := fg.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-fg.done:
				if fg.err != nil {
					t.Errorf("daemon exited with %v after %v, want exit 0\n%s", fg.err, sig, fg.log())
				}
			case <-time.After(exitTimeout):
				t.Fatalf("daemon still runs %v after %v", exitTimeout, sig)
			}
			if isMounted(t, dir) {
				t.Errorf("%s still mounted after %v", dir, sig)
			}
			if n := e.runtimeEntries(t); len(n) != 0 {
				t.Errorf("runtime dir after %v: %v, want empty", sig, n)
			}
		})
	}
}

// startForeground starts a --foreground daemon and waits until its mount
// appears. In t.Cleanup it is unmounted and killed if still there.
func (e *env) startForeground(t *testing.T, dir, cache string) *foreground {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, suite.bin, "mount", "--foreground", source, dir, "--cache-dir", cache,
		"--endpoint-url", e.proxy.Endpoint, "--force-path-style")
	cmd.Env = e.childEnv()
	cmd.Dir = "/"
	fg := startForegroundCmd(t, cmd, cancel, func() {
		if isMounted(t, dir) {
			_ = exec.Command("umount", "-l", dir).Run()
		}
	})
	waitFor(t, 30*time.Second, dir+" to be mounted", func() bool {
		select {
		case <-fg.done:
			t.Fatalf("mount --foreground exited before mounting:\n%s", fg.log())
		default:
		}
		return isMounted(t, dir)
	})
	return fg
}
