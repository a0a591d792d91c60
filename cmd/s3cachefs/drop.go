package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"s3cachefs/blockcache"
)

const dropHelp = `usage: s3cachefs drop [--purge] [--force] MOUNTPOINT

Unmounts MOUNTPOINT and stops its daemon. Refuses while files are open
unless --force. --purge also deletes the cached data and index.

flags:
`

func cmdDrop(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("drop", flag.ContinueOnError)
	purge := fs.Bool("purge", false, "also delete the cache data and index")
	force := fs.Bool("force", false, "unmount even while files are open (they fail afterwards)")
	pos, err := parseArgs(fs, args, dropHelp)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("drop needs exactly one MOUNTPOINT, got %d arguments", len(pos))
	}
	mp, err := cleanPath(pos[0])
	if err != nil {
		return err
	}
	c := newClient(mp)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := c.status(ctx)
	cacheDir, fuseFD, dead := r.CacheDir, r.FuseFD, false
	switch {
	case errors.Is(err, errNoDaemon):
		st, _ := c.readState() // dropDead removes it
		fuseFD, dead = st.FuseFD, true
		cacheDir, err = dropDead(c, os.Stderr)
		if err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		if err := c.shutdown(ctx, *force); err != nil {
			return err
		}
	}
	switch {
	case fuseFD > 0 && dead: // dropDead said what is left for the helper
	case fuseFD > 0:
		fmt.Fprintln(stdout, handedOverNote(mp, fuseFD))
	default:
		fmt.Fprintf(stdout, "unmounted %s\n", mp)
	}
	if *purge {
		if cacheDir == "" {
			return fmt.Errorf("cannot purge: the cache dir of %s is unknown", mp)
		}
		if err := purgeCache(cacheDir); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted the cache in %s\n", cacheDir)
	}
	return nil
}

// dropDead cleans up after a daemon that no longer answers: it detaches a
// mount left behind (saying so on notice) and removes the stale socket and
// state file. It returns the cache dir the daemon used, when known.
func dropDead(c *client, notice io.Writer) (string, error) {
	st, stateErr := c.readState()
	if stateErr == nil && processAlive(st.PID) {
		return "", fmt.Errorf("the daemon of %s (pid %d) is running but does not answer on %s; not touching its mount", c.mountpoint, st.PID, c.sock)
	}
	if stateErr == nil && st.FuseFD > 0 {
		// Its mount is the helper's, wherever that is: only the socket
		// and state file are ours to remove.
		fmt.Fprintf(notice, "s3cachefs: the daemon of %s%s had died; it served /dev/fd/%d of a mount made by another process, which must unmount it\n",
			c.mountpoint, deadPID(st, stateErr), st.FuseFD)
		os.Remove(c.sock)
		os.Remove(c.state)
		return st.CacheDir, nil
	}
	ours, err := isOurs(c.mountpoint)
	if err != nil {
		return "", err
	}
	if !ours && stateErr != nil {
		return "", fmt.Errorf("%s is not an s3cachefs mount", c.mountpoint)
	}
	if ours {
		if err := detachMount(c.mountpoint); err != nil {
			return "", fmt.Errorf("unmount %s (its daemon is gone): %w", c.mountpoint, err)
		}
		fmt.Fprintf(notice, "s3cachefs: the daemon of %s%s had died; removed its mount\n", c.mountpoint, deadPID(st, stateErr))
	}
	os.Remove(c.sock)
	os.Remove(c.state)
	return st.CacheDir, nil
}

// purgeCache deletes what s3cachefs keeps in dir, then dir itself if that
// leaves it empty. Other files in dir are left alone.
func purgeCache(dir string) error {
	for _, path := range []string{blockcache.FilesDir(dir), filepath.Join(dir, indexFileName), filepath.Join(dir, logFileName)} {
		if err := os.RemoveAll(path); err != nil {
			return fmt.Errorf("purge %s: %w", dir, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("purge %s: %w", dir, err)
	}
	return nil
}

// processAlive reports whether pid runs. A zombie (dead, not yet reaped by
// whoever inherited it) does not count.
func processAlive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may
	// itself hold spaces or parentheses.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 || i+2 >= len(stat) {
		return true
	}
	state := stat[i+2]
	return state != 'Z' && state != 'X'
}

// deadPID names the dead daemon's pid for the notice, when its state file
// told it.
func deadPID(st mountState, stateErr error) string {
	if stateErr != nil || st.PID <= 0 {
		return ""
	}
	return fmt.Sprintf(" (pid %d)", st.PID)
}
