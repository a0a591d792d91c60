package test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mountInfo is one mount of the mount table.
type mountInfo struct {
	Point  string
	FSType string
	Source string
}

// mountTable parses /proc/self/mountinfo:
// "id parent maj:min root point options [optional...] - type source superoptions".
func mountTable() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountInfo
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i := 6; i+2 < len(fields); i++ {
			if fields[i] == "-" {
				out = append(out, mountInfo{
					Point: unescape(fields[4]), FSType: fields[i+1], Source: unescape(fields[i+2]),
				})
				break
			}
		}
	}
	return out, sc.Err()
}

// unescape undoes the kernel's octal escapes (\040 is a space).
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// fuseMounts returns the s3cachefs mounts of the machine.
func fuseMounts() ([]mountInfo, error) {
	all, err := mountTable()
	if err != nil {
		return nil, err
	}
	var out []mountInfo
	for _, m := range all {
		if m.FSType == "fuse.s3cachefs" {
			out = append(out, m)
		}
	}
	return out, nil
}

// mountsAt returns every mount stacked at dir.
func mountsAt(t *testing.T, dir string) []mountInfo {
	t.Helper()
	all, err := mountTable()
	if err != nil {
		t.Fatal(err)
	}
	var out []mountInfo
	for _, m := range all {
		if m.Point == dir {
			out = append(out, m)
		}
	}
	return out
}

// isMounted reports whether anything is mounted at dir.
func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	return len(mountsAt(t, dir)) > 0
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
