package test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestWritesFailEROFS checks that every kind of write to the mount fails
// with EROFS and changes nothing.
func TestWritesFailEROFS(t *testing.T) {
	e := newEnv(t)
	data := []byte("read-only bytes\n")
	e.srv.PutMany(t, bucket, map[string][]byte{
		prefix + "/train/a.npz": data,
		prefix + "/dev/b.npz":   data,
	})
	m := e.mount(t)
	file := filepath.Join(m.dir, "train", "a.npz")
	dir := filepath.Join(m.dir, "dev")
	fresh := filepath.Join(m.dir, "train", "new.npz")

	ops := []struct {
		name string
		op   func() error
	}{
		{"open for writing", func() error { return openClose(file, os.O_WRONLY) }},
		{"open for reading and writing", func() error { return openClose(file, os.O_RDWR) }},
		{"open with O_TRUNC", func() error { return openClose(file, os.O_WRONLY|os.O_TRUNC) }},
		{"open for appending", func() error { return openClose(file, os.O_WRONLY|os.O_APPEND) }},
		{"create a file", func() error { return openClose(fresh, os.O_WRONLY|os.O_CREATE) }},
		{"create a file exclusively", func() error { return openClose(fresh, os.O_RDWR|os.O_CREATE|os.O_EXCL) }},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(m.dir, "newdir"), 0o755) }},
		{"remove a file", func() error { return os.Remove(file) }},
		{"remove a folder", func() error { return syscall.Rmdir(dir) }},
		{"rename", func() error { return os.Rename(file, fresh) }},
		{"truncate", func() error { return os.Truncate(file, 0) }},
		{"symlink", func() error { return os.Symlink("a.npz", fresh) }},
		{"hard link", func() error { return os.Link(file, fresh) }},
		{"chmod", func() error { return os.Chmod(file, 0o666) }},
		{"chtimes", func() error { return os.Chtimes(file, time.Now(), time.Now()) }},
	}
	for _, o := range ops {
		if err := o.op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: got %v, want EROFS", o.name, err)
		}
	}

	readAll(t, m.dir, map[string][]byte{"train/a.npz": data, "dev/b.npz": data})
	if _, err := os.Lstat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after failed writes, %s: %v, want ENOENT", fresh, err)
	}
	if _, err := os.Stat(filepath.Join(m.dir, "newdir")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after a failed mkdir, newdir: %v, want ENOENT", err)
	}
}

// openClose opens path with flag and closes it at once.
func openClose(path string, flag int) error {
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}
