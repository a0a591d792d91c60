package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// fsType is the filesystem type our mounts show in /proc/mounts.
const fsType = "fuse.s3cachefs"

// ours reports whether m is an s3cachefs mount: its type says so, or
// (gVisor shows every FUSE mount as plain "fuse", without our subtype or
// source) it is a FUSE mount that a daemon of ours has a control socket
// for.
func (m mountEntry) ours() bool {
	if m.FSType == fsType {
		return true
	}
	if m.FSType != "fuse" {
		return false
	}
	sock, _ := controlPaths(m.Point)
	_, err := os.Stat(sock)
	return err == nil
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	ID     string // the mount's ID, unique among mounts present at once
	Point  string // mount point, unescaped
	FSType string
	Source string
	Owner  int    // the user_id= of a FUSE mount: the uid of its daemon; -1 if none
	Root   string // the folder of the filesystem mounted there, unescaped
	Super  string // the superblock's options ("" if the line has none)
}

// readMounts parses /proc/self/mountinfo.
func readMounts() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if e, ok := parseMountinfoLine(sc.Text()); ok {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// parseMountinfoLine parses "id parent maj:min root point opts... - type source superopts".
func parseMountinfoLine(line string) (mountEntry, bool) {
	fields := strings.Fields(line)
	sep := -1
	for i, f := range fields {
		if f == "-" && i >= 6 {
			sep = i
			break
		}
	}
	if sep < 0 || len(fields) < sep+3 {
		return mountEntry{}, false
	}
	e := mountEntry{
		ID:     fields[0],
		Point:  unescapeMount(fields[4]),
		FSType: fields[sep+1],
		Source: unescapeMount(fields[sep+2]),
		Owner:  -1,
		Root:   unescapeMount(fields[3]),
	}
	if len(fields) > sep+3 {
		e.Super = fields[sep+3]
		for _, o := range strings.Split(fields[sep+3], ",") {
			if v, ok := strings.CutPrefix(o, "user_id="); ok {
				if n, err := strconv.Atoi(v); err == nil && n >= 0 {
					e.Owner = n
				}
			}
		}
	}
	return e, true
}

// unescapeMount undoes the kernel's octal escapes (\040 for space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}

// mountAt returns the mount whose mount point is path, if any. The last
// entry wins, as mounts stack.
func mountAt(path string) (mountEntry, bool, error) {
	ms, err := readMounts()
	if err != nil {
		return mountEntry{}, false, err
	}
	var found mountEntry
	ok := false
	for _, m := range ms {
		if m.Point == path {
			found, ok = m, true
		}
	}
	return found, ok, nil
}

// ourMounts returns the s3cachefs mounts on this machine.
func ourMounts() ([]mountEntry, error) {
	ms, err := readMounts()
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	for _, m := range ms {
		if m.ours() {
			out = append(out, m)
		}
	}
	return out, nil
}

// ownedBy returns the mounts of ms whose daemon runs as uid.
func ownedBy(ms []mountEntry, uid int) []mountEntry {
	var out []mountEntry
	for _, m := range ms {
		if m.Owner == uid {
			out = append(out, m)
		}
	}
	return out
}

// mountFlag defines the --mount flag every command that talks to a daemon
// takes.
func mountFlag(fs *flag.FlagSet) *string {
	return fs.String("mount", "", "the mountpoint (default: the mount holding the current directory, else the only one)")
}

// resolvePaths resolves the mount and turns PATHs into paths relative to
// its root.
func resolvePaths(mount string, pos []string) (mp string, paths []string, err error) {
	if mp, err = resolveMount(mount); err != nil {
		return "", nil, err
	}
	paths, err = mountRelative(mp, pos)
	return mp, paths, err
}

// resolveMount picks the mount a command acts on: the one given, else the
// one holding the current directory, else the only one there is. Mounts
// of this user count, when there are any: another user's daemon is not
// found through this user's runtime dir.
func resolveMount(given string) (string, error) {
	if given != "" {
		return cleanPath(given)
	}
	ms, err := ourMounts()
	if err != nil {
		return "", err
	}
	if mine := ownedBy(ms, os.Geteuid()); len(mine) > 0 {
		ms = mine
	}
	if len(ms) == 0 {
		return "", errors.New("no s3cachefs mount found; pass --mount MOUNTPOINT")
	}
	if wd, err := os.Getwd(); err == nil {
		best := ""
		for _, m := range ms {
			if (wd == m.Point || strings.HasPrefix(wd, strings.TrimSuffix(m.Point, "/")+"/")) && len(m.Point) > len(best) {
				best = m.Point
			}
		}
		if best != "" {
			return best, nil
		}
	}
	if len(ms) == 1 {
		return ms[0].Point, nil
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.Point)
	}
	return "", fmt.Errorf("several s3cachefs mounts (%s); pass --mount MOUNTPOINT", strings.Join(names, ", "))
}

// cleanPath makes p absolute and resolves symlinks where it exists. A
// handed-over /dev/fd/N stays as it is: it names a descriptor, not the
// /dev/fuse it links to.
func cleanPath(p string) (string, error) {
	if _, ok := fuseFDPath(p); ok {
		return filepath.Clean(p), nil
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", p, err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real, nil
	}
	return abs, nil
}

// reapDeadMount cleans up the mount a dead daemon left at mp, so that a new
// mount can take its place: a daemon killed with SIGKILL leaves its mount
// in the table, and every access to it fails with "transport endpoint is
// not connected". It detaches such a mount, removes the dead daemon's
// socket and state file, and says so on notice in one line. It leaves
// alone a mountpoint that is not an s3cachefs mount (checkMountpoint
// reports it) and one whose daemon still answers (already mounted).
func reapDeadMount(mp string, notice io.Writer) error {
	ours, err := isOurs(mp)
	if err != nil || !ours {
		return err
	}
	c := newClient(mp)
	if daemonAnswers(c.sock) {
		return nil
	}
	_, err = dropDead(c, notice)
	return err
}

// daemonAnswers reports whether a daemon accepts connections on sock. A
// daemon that died leaves its socket file behind, but nobody listens.
func daemonAnswers(sock string) bool {
	conn, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// isOurs reports whether the mount table has an s3cachefs mount at path.
func isOurs(path string) (bool, error) {
	m, ok, err := mountAt(path)
	return ok && m.ours(), err
}
