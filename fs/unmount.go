package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
)

// Unmount unmounts the s3cachefs mount at mountpoint: with umount(2) where
// this process may, else with fusermount3 (a mount of a user's own).
// Lazy detaches a busy mount at once; its open files fail afterwards.
//
// Unlike fuse.Server.Unmount it does not wait for the serve loop to end:
// Linux ends it when the mount goes, but gVisor never tells the daemon of
// an unmount, so a wait there would never return. The caller waits for
// the serve loop itself, within a bound.
func Unmount(mountpoint string, lazy bool) error {
	flags := 0
	if lazy {
		flags = syscall.MNT_DETACH
	}
	err := syscall.Unmount(mountpoint, flags)
	if err == nil || !errors.Is(err, syscall.EPERM) {
		if err != nil {
			return fmt.Errorf("unmount %s: %w", mountpoint, err)
		}
		return nil
	}
	bin, lerr := fusermount()
	if lerr != nil {
		return fmt.Errorf("unmount %s: %w (and %v)", mountpoint, err, lerr)
	}
	args := []string{"-u"}
	if lazy {
		args = append(args, "-z")
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, append(args, "--", mountpoint)...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("unmount %s: %s: %w", mountpoint, strings.TrimSpace(stderr.String()), err)
	}
	return nil
}

// fusermount finds fusermount3, or fusermount of FUSE 2.
func fusermount() (string, error) {
	for _, name := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		if p := "/bin/" + name; isExecutable(p) {
			return p, nil
		}
	}
	return "", errors.New("neither fusermount3 nor fusermount is installed (apt-get install fuse3)")
}

func isExecutable(p string) bool {
	_, err := exec.LookPath(p)
	return err == nil
}
