package test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"s3cachefs/fs/mounttab"
)

// fuseMounts returns the s3cachefs mounts of the machine.
func fuseMounts() ([]mounttab.Entry, error) {
	all, err := mounttab.Read()
	if err != nil {
		return nil, err
	}
	var out []mounttab.Entry
	for _, m := range all {
		if m.FSType == mounttab.FSType {
			out = append(out, m)
		}
	}
	return out, nil
}

// mountTable reads the mount table.
func mountTable(t *testing.T) []mounttab.Entry {
	t.Helper()
	all, err := mounttab.Read()
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// mountsAt returns every mount stacked at dir.
func mountsAt(t *testing.T, dir string) []mounttab.Entry {
	t.Helper()
	var out []mounttab.Entry
	for _, m := range mountTable(t) {
		if m.Point == dir {
			out = append(out, m)
		}
	}
	return out
}

// mountsWhere returns the mounts under dir or at point.
func mountsWhere(t *testing.T, dir, point string) []mounttab.Entry {
	t.Helper()
	var out []mounttab.Entry
	for _, m := range mountTable(t) {
		if m.Point == point || strings.HasPrefix(m.Point, dir+"/") || m.Point == dir {
			out = append(out, m)
		}
	}
	return out
}

// mountOf returns the mount at dir, the one on top if several are.
func mountOf(t *testing.T, dir string) mounttab.Entry {
	t.Helper()
	m, ok := mounttab.At(mountTable(t), dir)
	if !ok {
		t.Fatalf("nothing is mounted at %s", dir)
	}
	return m
}

// mountOptions returns the options of the mount at dir, its own and its
// superblock's, as /proc/mounts lists them.
func mountOptions(t *testing.T, dir string) []string {
	t.Helper()
	return mountOf(t, dir).AllOptions()
}

// isMounted reports whether anything is mounted at dir.
func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	return len(mountsAt(t, dir)) > 0
}

// foreground is a `mount --foreground` daemon a test runs itself.
type foreground struct {
	cmd     *exec.Cmd
	logPath string        // its stdout and stderr
	done    chan struct{} // closed once it has exited
	err     error         // what Wait returned; read after done
}

func (f *foreground) log() string {
	b, _ := os.ReadFile(f.logPath)
	return string(b)
}

// startForegroundCmd starts cmd, made with exec.CommandContext on a
// context that cancel ends, with its output in a log file. When t ends it
// runs before (if not nil; to unmount, say), kills the process if it still
// runs, and checks the log for data races.
func startForegroundCmd(t *testing.T, cmd *exec.Cmd, cancel context.CancelFunc, before func()) *foreground {
	t.Helper()
	fg := &foreground{cmd: cmd, logPath: filepath.Join(t.TempDir(), "daemon.log"), done: make(chan struct{})}
	logFile, err := os.Create(fg.logPath)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		fg.err = cmd.Wait()
		close(fg.done)
	}()
	t.Cleanup(func() {
		if before != nil {
			before()
		}
		cancel()
		<-fg.done
		if log := fg.log(); strings.Contains(log, "WARNING: DATA RACE") {
			t.Errorf("data race in the foreground daemon:\n%s", log)
		} else if t.Failed() {
			t.Logf("foreground daemon log:\n%s", log)
		}
	})
	return fg
}

// daemonPIDs returns the live processes running the test's s3cachefs
// binaries, race-built or plain (zombies have no exe link and are not
// listed).
func daemonPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", d.Name(), "exe"))
		if err == nil && (exe == suite.bin || exe == suite.bin+plainSuffix) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// waitExit waits until process pid has exited, using a pidfd so that it
// learns of the exit from the kernel rather than by polling.
func waitExit(pid int, timeout time.Duration) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("process %d still runs %v after its mount went away", pid, timeout)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("poll pidfd of %d: %w", pid, err)
		case n > 0:
			return nil
		}
	}
}

// procStatus returns the value of the line "key:" of /proc/PID/status,
// trimmed.
func procStatus(t *testing.T, pid int, key string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("status of pid %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, key)
	return ""
}

// procStatusBytes returns a "NNN kB" value of /proc/PID/status in bytes.
func procStatusBytes(t *testing.T, pid int, key string) int64 {
	t.Helper()
	v := procStatus(t, pid, key)
	kb, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	if err != nil {
		t.Fatalf("/proc/%d/status: %s %q", pid, key, v)
	}
	return kb << 10
}
