package fs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"s3cachefs/fs/mounttab"
)

// MountOptions configure Mount.
type MountOptions struct {
	FsName     string // shown as the source in /proc/mounts, e.g. "s3://bucket/prefix"
	AllowOther bool   // let users other than the mounting one in
	Debug      bool   // log every FUSE request and reply (at debug level)
	// PassthroughProbe, when set, names a regular file on the cache's
	// filesystem. Mount registers it once as a FUSE backing file: if the
	// kernel accepts (Linux >= 6.9, root in the initial user namespace),
	// complete files are then opened in passthrough mode. "" keeps every
	// read in the daemon.
	PassthroughProbe string
	// KernelReadAhead, when positive, is the kernel's read-ahead window for
	// the mount in bytes (rounded down to KiB; the kernel's own is 128 KiB).
	// It decides how large the READs reaching the daemon are (up to 1 MiB
	// each): a larger window means fewer round trips per byte. Setting it
	// needs root; a failure is logged, not returned.
	KernelReadAhead int64
	NoExec          bool // mount noexec: the kernel refuses to execute files of the mount
	// HandedOver says the mountpoint is /dev/fd/N, a /dev/fuse another
	// process mounted and handed over: go-fuse serves it without
	// mounting, and there is no mountpoint to look at (no self-check, no
	// read-ahead setting).
	HandedOver bool
	Logger     *slog.Logger
}

// Mount mounts root read-only at mountpoint and returns the serving server
// once the kernel has answered. It mounts with mount(2) directly, which
// needs root, and falls back to fusermount3 otherwise. A mountpoint
// /dev/fd/N is an open /dev/fuse that another process mounted: go-fuse
// serves it as it is, mounting nothing (and server.Unmount fails: that
// process unmounts, which ends the serve loop). The caller ends the
// mount with server.Unmount and waits for the serve loop with server.Wait.
// A Root is mounted at most once.
func Mount(mountpoint string, root *Root, opts MountOptions) (*fuse.Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	traceLevel := slog.LevelWarn
	if opts.Debug {
		traceLevel = slog.LevelDebug
	}
	timeout := root.m.opts.EntryTimeout
	fsOpts := &fs.Options{
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
		// A name missing from a fresh listing stays missing until the
		// listing is refreshed, so the kernel may remember that too.
		NegativeTimeout: &timeout,
		RootStableAttr:  &fs.StableAttr{Ino: rootIno},
		Logger:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		MountOptions: fuse.MountOptions{
			FsName:     opts.FsName,
			Name:       mounttab.Subtype,
			AllowOther: opts.AllowOther,
			Debug:      opts.Debug,
			Logger:     slog.NewLogLogger(log.Handler(), traceLevel),
			// "ro" for fusermount3; MS_RDONLY for mount(2). The kernel
			// enforces the modes we report (default_permissions) rather
			// than letting every user read through allow_other.
			Options:          []string{"ro", "default_permissions"},
			DisableSplice:    true,
			DirectMount:      !opts.HandedOver, // mount(2) on /dev/fd/N would mount on /dev/fuse
			DirectMountFlags: syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV,
			// Let a READ carry up to 1 MiB (max_read and max_pages),
			// a whole cache block, so large sequential reads cost fewer
			// round trips.
			MaxWrite: fuse.MAX_KERNEL_WRITE,
			// READDIRPLUS only when the reader stats what it lists (ls -l,
			// os.walk with sizes): a plain scandir of a million names then
			// costs no node per name, and the node bound (forget.go) never
			// has to prune them, which would also drop the kernel's copy
			// of the folder's entries.
			ExtraCapabilities: fuse.CAP_READDIRPLUS_AUTO,
		},
	}
	if opts.NoExec {
		// go-fuse makes it MS_NOEXEC for mount(2); fusermount3 takes the word.
		fsOpts.MountOptions.Options = append(fsOpts.MountOptions.Options, "noexec")
	}
	probe, err := newProbe()
	if err != nil {
		return nil, err
	}
	root.m.probe = probe
	raw := &releaseLast{RawFileSystem: fs.NewNodeFS(root, fsOpts), m: root.m}
	server, err := fuse.NewServer(raw, mountpoint, &fsOpts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	go server.Serve() // ends when the mount goes; server.Wait waits for it
	if err := server.WaitMount(); err != nil {
		// Unmounting also ends the serve loop started above.
		if uerr := server.Unmount(); uerr != nil {
			log.Warn("unmount after failed mount", "mountpoint", mountpoint, "err", uerr)
		}
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	init := server.KernelSettings()
	root.m.kernel = fmt.Sprintf("FUSE %d.%d, INIT flags %#x", init.Major, init.Minor, init.Flags64())
	if root.m.notify = notifyOK(init); !root.m.notify {
		root.m.quirks.note("no notifications sent: this FUSE side announces no asynchronous reads at INIT")
	} else {
		root.m.prune.Store(init.SupportsNotify(fuse.NOTIFY_PRUNE))
		root.m.nodes.start(kernelPruner{root.m})
		// The sweeper ends with the serve loop.
		go func() {
			server.Wait()
			root.m.nodes.stop()
		}()
	}
	if !opts.HandedOver {
		if err := selfCheck(root, mountpoint); err != nil {
			// Not server.Unmount: it would wait for a serve loop that
			// a FUSE side which lost our replies may never end.
			if uerr := Unmount(mountpoint, true); uerr != nil {
				log.Warn("unmount after failed self-check", "mountpoint", mountpoint, "err", uerr)
			}
			return nil, err
		}
	}
	log.Info("FUSE side", "kernel", root.m.kernel, "fallbacks", strings.Join(root.m.fallbacks(), "; "))
	if opts.KernelReadAhead > 0 && !opts.HandedOver { // /dev/fd/N stats as /dev/fuse, not the mount
		if err := setReadAhead(mountpoint, opts.KernelReadAhead); err != nil {
			log.Info("kernel read-ahead left at its default", "err", err)
		}
	}
	if opts.PassthroughProbe == "" {
		root.m.passthroughOff.Store("turned off")
	} else if err := probePassthrough(server, opts.PassthroughProbe); err != nil {
		root.m.passthroughOff.Store(err.Error())
	} else {
		root.m.passthrough.Store(true)
	}
	return server, nil
}

// notifyOK reports whether the FUSE side may be sent notifications
// (NOTIFY_INVAL_ENTRY: "forget this name"). The protocol announces no flag
// for them, and a FUSE side that does not take them may break on one:
// gVisor before 2023 loses its FUSE device for good. Linux has taken them
// since protocol 7.12, and announces asynchronous reads at INIT since
// long before; a FUSE side announcing neither is sent none.
func notifyOK(init *fuse.InitIn) bool {
	return init.Minor >= 12 && init.Flags64()&fuse.CAP_ASYNC_READ != 0
}

// probePassthrough registers the file at path as a backing file and
// unregisters it again, to learn whether the kernel lets this process use
// FUSE passthrough. The error says why not.
func probePassthrough(server *fuse.Server, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open passthrough probe: %w", err)
	}
	defer f.Close()
	id, errno := server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(f.Fd())})
	switch {
	case errno == syscall.EPERM:
		return errors.New("the kernel allows FUSE passthrough to root in the initial user namespace only")
	case errno != 0:
		return fmt.Errorf("the kernel refused a FUSE backing file (needs Linux 6.9 or later): %w", errno)
	}
	if errno := server.UnregisterBackingFd(id); errno != 0 {
		return fmt.Errorf("unregister FUSE backing file: %w", errno)
	}
	return nil
}

// setReadAhead sets the read-ahead window of the mount at mountpoint:
// every FUSE mount has its own backing device info in sysfs, named by
// the mount's device number.
func setReadAhead(mountpoint string, bytes int64) error {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return fmt.Errorf("stat %s: %w", mountpoint, err)
	}
	path := readAheadPath(st.Dev)
	if err := os.WriteFile(path, []byte(strconv.FormatInt(bytes>>10, 10)), 0); err != nil {
		return fmt.Errorf("set read-ahead: %w", err)
	}
	return nil
}

// readAheadPath is the sysfs file of the read-ahead window (in KiB) of the
// filesystem on device dev.
func readAheadPath(dev uint64) string {
	return fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(dev), unix.Minor(dev))
}

// releaseLast ends a cached open's count once go-fuse's Release has
// returned, backing-file bookkeeping included (see fileNode.released).
type releaseLast struct {
	fuse.RawFileSystem
	m *shared
}

func (r *releaseLast) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	r.RawFileSystem.Release(cancel, in)
	if n, ok := r.m.releasing.LoadAndDelete(cancel); ok {
		n.(*fileNode).cachedClosed()
	}
}
