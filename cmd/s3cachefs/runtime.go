package main

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	s3fs "s3cachefs/fs"
)

// runtimeDirEnv overrides where control sockets live (tests use it).
const runtimeDirEnv = "S3CACHEFS_RUNTIME_DIR"

// runtimeDir is the folder of control sockets and state files. Every
// command finds a daemon the same way, by this folder and the mountpoint:
//
//   - root: /run/s3cachefs
//   - any other user: $XDG_RUNTIME_DIR/s3cachefs when XDG_RUNTIME_DIR is
//     set (an absolute path), else /tmp/s3cachefs-UID
//
// $S3CACHEFS_RUNTIME_DIR, when set, overrides both.
func runtimeDir() string {
	return runtimeDirFor(os.Geteuid(), os.Getenv)
}

// runtimeDirFor is runtimeDir for user uid and environment getenv.
func runtimeDirFor(uid int, getenv func(string) string) string {
	if d := getenv(runtimeDirEnv); d != "" {
		return d
	}
	if uid == 0 {
		return "/run/s3cachefs"
	}
	if x := getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(x) {
		return filepath.Join(x, "s3cachefs")
	}
	return fmt.Sprintf("/tmp/s3cachefs-%d", uid)
}

// makeRuntimeDir creates the runtime dir (0700) if needed and checks that
// it is private to this user.
func makeRuntimeDir() (string, error) {
	dir := runtimeDir()
	if sock, _ := controlPaths("/"); len(sock) > maxSocketPath {
		return "", fmt.Errorf("runtime dir %s is too long for a unix socket path (at most %d bytes): set XDG_RUNTIME_DIR to a shorter folder",
			dir, maxSocketPath)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create runtime dir: %w", err)
	}
	return dir, privateRuntimeDir(dir)
}

// privateRuntimeDir checks the runtime dir dir, unless it was named by
// $S3CACHEFS_RUNTIME_DIR, which is taken as given.
func privateRuntimeDir(dir string) error {
	if os.Getenv(runtimeDirEnv) != "" {
		return nil
	}
	return checkRuntimeDir(dir)
}

// maxSocketPath is the longest path a unix socket may have on Linux
// (sun_path is 108 bytes, with the terminating NUL).
const maxSocketPath = 107

// errRuntimeDir marks a runtime dir that is not this user's own.
var errRuntimeDir = errors.New("runtime dir is not private")

// checkRuntimeDir refuses a runtime dir that another user could have
// made or can write (a folder in /tmp can be made by anyone): it must be
// a real folder, owned by this user, with no group or other bits. A
// missing folder passes: there is no daemon to find in it.
func checkRuntimeDir(dir string) error {
	st, err := os.Lstat(dir)
	if errors.Is(err, iofs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("runtime dir %s: %w", dir, err)
	}
	owner := st.Sys().(*syscall.Stat_t).Uid
	if !st.IsDir() || int(owner) != os.Geteuid() || st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: %s must be a folder of uid %d with mode 0700, not %v owned by uid %d; remove it",
			errRuntimeDir, dir, os.Geteuid(), st.Mode(), owner)
	}
	return nil
}

// fuseConf is where fusermount3 reads whether users may use allow_other.
const fuseConf = "/etc/fuse.conf"

// checkAllowOther refuses --allow-other for a user other than root when
// fusermount3 would refuse it, so that mount fails before it makes
// anything. A fuse.conf this user cannot read is left to fusermount3.
func checkAllowOther(allowOther bool) error {
	if !allowOther || os.Geteuid() == 0 {
		return nil
	}
	b, err := os.ReadFile(fuseConf)
	if err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return nil
	}
	if !confAllowsOther(b) {
		return fmt.Errorf("--allow-other needs a line user_allow_other in %s when not run as root (add it, or mount without --allow-other)", fuseConf)
	}
	return nil
}

// confAllowsOther reports whether fuse.conf text has user_allow_other on a
// line of its own, as fusermount3 reads it: '#' starts a comment, and
// space around the word does not count.
func confAllowsOther(conf []byte) bool {
	for _, line := range strings.Split(string(conf), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
}

// detachMount detaches the mount at mp lazily: at once for new users,
// for processes still inside it once they leave. Root does it with
// umount2; other users through fusermount3, which may detach only their
// own mounts (s3fs.Unmount). A mount that is gone already is no error.
func detachMount(mp string) error {
	err := s3fs.Unmount(mp, true)
	if err == nil || errors.Is(err, syscall.EINVAL) {
		return nil // EINVAL: not a mountpoint (any more)
	}
	if _, mounted, merr := mountAt(mp); merr == nil && !mounted {
		return nil
	}
	return fmt.Errorf("detach %s: %w", mp, err)
}
