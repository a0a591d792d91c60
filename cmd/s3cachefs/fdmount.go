package main

// A handed-over /dev/fuse: `mount SOURCE /dev/fd/N` serves a mount that
// another, privileged process made (mount(2) with fd=N on a /dev/fuse it
// opened) and passed to this one as descriptor N, as Kubernetes CSI drivers
// do so that nothing privileged runs in the pod. go-fuse serves such a
// descriptor as it is, without mounting. The daemon never learns where the
// mount is: it names itself to the other commands by --mountpoint-name
// (else by /dev/fd/N), cannot unmount (drop stops it and says so), and
// stops by itself when the helper unmounts (the kernel then ends the
// connection).

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"s3cachefs/fs/mounttab"
)

// fuseFDPath returns N if p is /dev/fd/N with N >= 1, the form go-fuse
// serves as a handed-over descriptor.
func fuseFDPath(p string) (int, bool) {
	rest, ok := strings.CutPrefix(filepath.Clean(p), "/dev/fd/")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 1 || strconv.Itoa(n) != rest {
		return 0, false
	}
	return n, true
}

// applyFuseFD sets FuseFD and Name in cfg from its mountpoint and
// --mountpoint-name, and refuses what does not fit a handed-over
// descriptor.
func applyFuseFD(cfg *mountConfig, name string) error {
	n, ok := fuseFDPath(cfg.Mountpoint)
	cfg.Name = cfg.Mountpoint
	if !ok {
		if name != "" {
			return usagef("--mountpoint-name is only for a MOUNTPOINT of the form /dev/fd/N")
		}
		return nil
	}
	if n < 3 {
		return usagef("%s is standard input, output or error: a handed-over /dev/fuse must be descriptor 3 or above", cfg.Mountpoint)
	}
	if cfg.AllowOther {
		return usagef("--allow-other does nothing for %s: the process that mounts sets allow_other", cfg.Mountpoint)
	}
	cfg.FuseFD = n
	if name != "" {
		// Made absolute, not resolved: looking at the mount before this
		// daemon answers its INIT would wait for ever.
		var err error
		if cfg.Name, err = absPath(name); err != nil {
			return err
		}
		if _, ok := fuseFDPath(cfg.Name); ok {
			return usagef("--mountpoint-name must be where the mount is seen, not %s", name)
		}
	}
	return nil
}

// fuseMajor and fuseMinor are the device number of /dev/fuse.
const fuseMajor, fuseMinor = 10, 229

// checkFuseFD refuses a descriptor n that is not an open /dev/fuse with a
// mount on it. The kernel reports a /dev/fuse that no mount uses (never
// mounted, or unmounted since) as an error to poll, which reads nothing.
func checkFuseFD(n int) error {
	var st unix.Stat_t
	if err := unix.Fstat(n, &st); err != nil {
		return fmt.Errorf("/dev/fd/%d is not open (%v): the process that mounts must pass the /dev/fuse it mounted with as descriptor %d", n, err, n)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(fuseMajor, fuseMinor) {
		return fmt.Errorf("/dev/fd/%d is not /dev/fuse: the process that mounts must pass the /dev/fuse it mounted with as descriptor %d", n, n)
	}
	fds := []unix.PollFd{{Fd: int32(n), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err == nil && fds[0].Revents&unix.POLLERR != 0 {
			return fmt.Errorf("/dev/fd/%d is a /dev/fuse that no mount uses: the process that mounts must mount it (mount -t %s -o fd=N,...) before handing it over", n, mounttab.FSType)
		}
		return nil
	}
}

// fuseFile is the handed-over descriptor n as a file, nil for n = 0.
func fuseFile(n int) *os.File {
	if n == 0 {
		return nil
	}
	return os.NewFile(uintptr(n), "/dev/fuse")
}

// daemonFiles lays out the descriptors the background daemon inherits
// from 3 on: a handed-over /dev/fuse (nil: none) keeps its number, and
// the ready pipe takes another. It returns them and the ready pipe's
// number.
func daemonFiles(fuse, ready *os.File) ([]*os.File, int) {
	if fuse == nil {
		return []*os.File{ready}, 3
	}
	n := int(fuse.Fd())            // >= 3, as applyFuseFD checked
	files := make([]*os.File, n-2) // nil entries are closed in the child
	files[n-3] = fuse
	if n == 3 {
		return append(files, ready), 4
	}
	files[0] = ready
	return files, 3
}

// handedOverNote is what drop says after stopping the daemon of a mount
// made by another process.
func handedOverNote(name string, fd int) string {
	return fmt.Sprintf("stopped the daemon of %s; it served /dev/fd/%d of a mount made by another process, which must unmount it now (umount MOUNTPOINT)", name, fd)
}
