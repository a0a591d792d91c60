package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"s3cachefs/fs/mounttab"
)

// TestFdMount plays the privileged helper of a Kubernetes CSI driver: it
// opens /dev/fuse and mounts with fd=N itself, then hands the descriptor
// to s3cachefs running as an unprivileged user (`mount SOURCE /dev/fd/3`),
// which serves the mount without any privilege.
func TestFdMount(t *testing.T) {
	u := newUser(t)
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	reachable(t, suite.dataset)

	t.Run("umount by the helper", func(t *testing.T) {
		xdg := u.runtimeDir(t)
		env := u.env(e, "XDG_RUNTIME_DIR="+xdg)
		mnt, cache := u.dir(t), filepath.Join(u.dir(t), "cache")
		fuse := helperMount(t, u, mnt)
		r := u.exec(t, env, []*os.File{fuse}, suite.bin, "mount", source, "/dev/fd/3", "--cache-dir", cache,
			"--endpoint-url", e.proxy.Endpoint, "--force-path-style", "--mountpoint-name", mnt)
		fuse.Close() // the daemon has its own copy now
		if r.code != 0 || r.stdout != fmt.Sprintf("mounted %s at %s (cache %s)\n", source, mnt, cache) {
			t.Fatalf("mount /dev/fd/3 as %s: %s\ndaemon log:\n%s", u.name, r, logTail(cache))
		}
		m := &userMount{dir: mnt, cache: cache, pid: u.status(t, env, mnt).PID}
		t.Cleanup(func() { u.cleanup(t, env, m) })
		wantDaemonUID(t, m.pid, u.uid)
		wantPrivateSocket(t, u, filepath.Join(xdg, "s3cachefs"))

		u.compare(t, env, mnt, files) // from S3
		u.compare(t, env, mnt, files) // from SSD
		s := u.status(t, env, mnt)
		if s.Mountpoint != mnt || s.FuseFD != 3 || s.ReadMode != "daemon" || s.PassthroughOff == "" || s.BytesFromS3 < totalBytes(files) {
			t.Errorf("status: mountpoint %q, fuse_fd %d, read_mode %q (%q), %d bytes from S3; want %q, 3, daemon with a reason, >= %d",
				s.Mountpoint, s.FuseFD, s.ReadMode, s.PassthroughOff, s.BytesFromS3, mnt, totalBytes(files))
		}
		if r := u.run(t, env, "prefetch", "--mount", mnt, "dev"); r.code != 0 {
			t.Errorf("prefetch --mount %s as %s: %s", mnt, u.name, r)
		}

		// The helper unmounts: the kernel ends the connection, and the
		// daemon stops by itself.
		u.waitNoOpenFiles(t, env, mnt)
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Fatalf("the helper's umount %s: %v", mnt, err)
		}
		m.wantStopped(t)
		if names := dirNames(t, filepath.Join(xdg, "s3cachefs")); len(names) != 0 {
			t.Errorf("runtime dir after the helper's umount: %v, want empty", names)
		}
	})

	t.Run("drop, foreground", func(t *testing.T) {
		env := u.env(e, "XDG_RUNTIME_DIR="+u.runtimeDir(t))
		mnt, cache := u.dir(t), filepath.Join(u.dir(t), "cache")
		fuse := helperMount(t, u, mnt)
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		cmd := u.command(ctx, env, suite.bin, "mount", "--foreground", source, "/dev/fd/3", "--cache-dir", cache,
			"--endpoint-url", e.proxy.Endpoint, "--force-path-style", "--mountpoint-name", mnt)
		cmd.ExtraFiles = []*os.File{fuse}
		fg := startForegroundCmd(t, cmd, cancel, nil)
		fuse.Close()
		// It answers on its socket once it serves the mount.
		waitFor(t, exitTimeout, "the daemon of "+mnt, func() bool {
			return u.run(t, env, "status", "--mount", mnt).code == 0
		})
		u.compare(t, env, mnt, npzOnly(files, "dev"))

		u.waitNoOpenFiles(t, env, mnt)
		r := u.run(t, env, "drop", mnt)
		want := fmt.Sprintf("stopped the daemon of %s; it served /dev/fd/3 of a mount made by another process, "+
			"which must unmount it now (umount MOUNTPOINT)\n", mnt)
		if r.code != 0 || r.stdout != want {
			t.Errorf("drop %s as %s: %s\nwant stdout %q", mnt, u.name, r, want)
		}
		select {
		case <-fg.done:
			if fg.err != nil {
				t.Errorf("mount --foreground exited with %v after drop, want 0", fg.err)
			}
		case <-time.After(exitTimeout):
			t.Fatalf("mount --foreground still runs %v after drop", exitTimeout)
		}
		if !isMounted(t, mnt) {
			t.Errorf("drop unmounted %s, which the helper mounted", mnt)
		}
	})

	t.Run("not a /dev/fuse", func(t *testing.T) {
		plain, err := os.Open(suite.bin)
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		unmounted, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unmounted.Close()
		env := u.env(e, "XDG_RUNTIME_DIR="+u.runtimeDir(t))
		cache := filepath.Join(u.dir(t), "cache")
		// A descriptor the process did not inherit may be open all the
		// same (Go's runtime keeps a cgroup file open): 40 is not.
		for _, c := range []struct {
			fd   int
			want string
		}{
			{3, "s3cachefs: /dev/fd/3 is not /dev/fuse: the process that mounts must pass the /dev/fuse it mounted with as descriptor 3\n"},
			{4, "s3cachefs: /dev/fd/4 is a /dev/fuse that no mount uses: the process that mounts must mount it (mount -t fuse.s3cachefs -o fd=N,...) before handing it over\n"},
			{40, "s3cachefs: /dev/fd/40 is not open (bad file descriptor): the process that mounts must pass the /dev/fuse it mounted with as descriptor 40\n"},
		} {
			r := u.exec(t, env, []*os.File{plain, unmounted}, suite.bin, "mount", source, fmt.Sprintf("/dev/fd/%d", c.fd), "--cache-dir", cache,
				"--endpoint-url", e.proxy.Endpoint, "--force-path-style")
			if r.code != 1 || r.stderr != c.want {
				t.Errorf("mount /dev/fd/%d (3: a plain file, 4: a /dev/fuse not mounted): %s\nwant exit 1 and %q", c.fd, r, c.want)
			}
			if _, err := os.Lstat(cache); err == nil {
				t.Errorf("a refused mount made %s", cache)
			}
		}
	})
}

// helperMount does what a CSI driver's privileged helper does: it opens
// /dev/fuse and mounts it read-only at mnt for u (user_id, group_id), with
// the type s3cachefs mounts have. It returns the open /dev/fuse to hand
// over; the mount is detached when t ends if it is still there.
func helperMount(t *testing.T, u *testUser, mnt string) *os.File {
	t.Helper()
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/fuse: %v", err)
	}
	fuse := os.NewFile(uintptr(fd), "/dev/fuse")
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=%d,group_id=%d", fd, u.uid, u.gid)
	if err := unix.Mount(source, mnt, mounttab.FSType, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		fuse.Close()
		t.Fatalf("mount -t %s -o %s %s: %v", mounttab.FSType, opts, mnt, err)
	}
	t.Cleanup(func() {
		if isMounted(t, mnt) {
			_ = exec.Command("umount", "-l", mnt).Run()
		}
	})
	return fuse
}
