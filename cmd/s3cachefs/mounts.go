package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"s3cachefs/fs/mounttab"
)

// ours reports whether m is an s3cachefs mount: its type says so, or
// (gVisor shows every FUSE mount as plain "fuse", without our subtype or
// source) it is a FUSE mount that a daemon of ours has a control socket
// for.
func ours(m mounttab.Entry) bool {
	if m.FSType == mounttab.FSType {
		return true
	}
	if m.FSType != "fuse" {
		return false
	}
	sock, _ := controlPaths(m.Point)
	_, err := os.Stat(sock)
	return err == nil
}

// mountAt returns the mount whose mount point is path, if any.
func mountAt(path string) (mounttab.Entry, bool, error) {
	ms, err := mounttab.Read()
	if err != nil {
		return mounttab.Entry{}, false, err
	}
	m, ok := mounttab.At(ms, path)
	return m, ok, nil
}

// ourMounts returns the s3cachefs mounts on this machine.
func ourMounts() ([]mounttab.Entry, error) {
	ms, err := mounttab.Read()
	if err != nil {
		return nil, err
	}
	var out []mounttab.Entry
	for _, m := range ms {
		if ours(m) {
			out = append(out, m)
		}
	}
	return out, nil
}

// ownedBy returns the mounts of ms whose daemon runs as uid.
func ownedBy(ms []mounttab.Entry, uid int) []mounttab.Entry {
	var out []mounttab.Entry
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
	return ok && ours(m), err
}
