package main

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	"s3cachefs/fs/mounttab"
)

// mountWatchInterval is how often the daemon looks for its own mount in
// the mount table. Linux ends the serve loop when the mount goes (the
// FUSE device then reads ENODEV), but gVisor never tells the daemon that
// its mount went: its FUSE device keeps blocking. There, this is how a
// plain umount stops the daemon. One read of /proc/self/mountinfo a
// second; it never touches the mount itself.
const mountWatchInterval = time.Second

// serveAfterUnmount bounds the wait for the serve loop once the mount is
// gone: on Linux it ends at once; elsewhere it may never end.
const serveAfterUnmount = 2 * time.Second

// watchMount closes gone once the mount with the given ID, on device dev
// at mountpoint, has left the mount table and the mountpoint is no longer
// on dev; it returns when that happened or ctx is done. Both must say so:
// a mount table read while it changes can miss a line. A mount table it
// cannot read counts as the mount still being there.
func watchMount(ctx context.Context, id, mountpoint string, dev uint64, gone chan<- struct{}, log *slog.Logger) {
	tick := time.NewTicker(mountWatchInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		ms, err := mounttab.Read()
		if err != nil {
			log.Debug("watch mount table", "err", err)
			continue
		}
		present := false
		for _, m := range ms {
			present = present || m.ID == id
		}
		if present {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(mountpoint, &st); err == nil && st.Dev == dev {
			log.Info("the mount table read lacked the mount, but the mountpoint is still on its device")
			continue
		}
		close(gone)
		return
	}
}
