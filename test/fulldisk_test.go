package test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"s3cachefs/blockcache"
	"s3cachefs/index"
)

const (
	fullDiskDir   = "fulldisk" // the dataset's folder under the mount
	fullDiskFiles = 8
	fullDiskSize  = 3 << 20 // bytes a file, minus a little (partial last blocks)
	// fullDiskImage is the size of the ext4 image the cache lives on:
	// with its metadata and --min-free it holds about half the dataset.
	fullDiskImage = 24 << 20
	fullDiskMin   = 4 << 20 // --min-free of the first mount
	fullDiskBlock = 1 << 20 // the daemon's default block size
)

// TestFullDisk puts the cache on a small ext4 filesystem of its own (a
// loop-mounted image) and reads more than fits: first with --min-free,
// where eviction makes room and, once every cached file is open, reads go
// to S3 uncached; then with --min-free 0 while the test fills the
// filesystem from outside, so that the daemon's own writes hit ENOSPC
// midway through a block. Every read must return S3's bytes, status must
// show the full cache and the uncached reads, and afterwards the index
// must pass index.Check with every block it records matching S3.
// TestMinFreeAndFullCache (evict_test.go) covers --min-free on tmpfs.
func TestFullDisk(t *testing.T) {
	fs := fullDiskLoop(t)
	e := newEnv(t)
	files, byKey := fullDiskDataset(t, e)
	cache := filepath.Join(fs, "cache")
	names := sortedNames(files)

	t.Run("eviction then uncached reads", func(t *testing.T) {
		m := e.mountAt(t, newMountpoint(t), cache, "--min-free", "4MiB")
		for _, name := range names {
			readAll(t, m.dir, map[string][]byte{name: files[name]})
			if free := freeBytes(t, fs); free < fullDiskMin-fullDiskBlock {
				t.Fatalf("after reading %s only %d bytes are free, below --min-free %d", name, free, fullDiskMin)
			}
		}
		if st := e.status(t, m); st.Evictions == 0 {
			t.Fatalf("reading %d bytes through a %d-byte filesystem evicted nothing: %+v",
				fullDiskFiles*fullDiskSize, fullDiskImage, st)
		}
		// Every file open at once: none can be evicted, so what does not
		// fit is read from S3 uncached. The kernel must not answer from
		// its page cache what the daemon evicted.
		if !dropKernelCaches(t) {
			t.Skip("cannot drop the kernel's page cache: reads would not reach the daemon")
		}
		var held []*os.File
		for _, name := range names {
			f, err := os.Open(filepath.Join(m.dir, name))
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, f)
		}
		for i, f := range held {
			got, err := io.ReadAll(f)
			if err != nil || !bytes.Equal(got, files[names[i]]) {
				t.Errorf("read %s with every file open: wrong bytes (err %v)", names[i], err)
			}
		}
		st := e.status(t, m)
		for _, f := range held {
			f.Close()
		}
		if !st.CacheFull || st.UncachedReads == 0 || st.FetchErrors != 0 {
			t.Fatalf("status with every file open on a full cache: %+v; want cache_full, uncached reads, no fetch errors", st)
		}
		e.waitNoOpenFiles(t, m)
		e.drop(t, m)
		fullDiskCheckIndex(t, cache, byKey)
	})

	t.Run("filesystem filled from outside", func(t *testing.T) {
		m := e.mountAt(t, newMountpoint(t), cache, "--min-free", "0")
		if r := e.run(t, "evict", "--mount", m.dir, fullDiskDir); r.code != 0 {
			t.Fatalf("evict: %s", r)
		}
		// Leave less than a block free: the daemon's next write stops
		// midway through its first block.
		filler := fullDiskFill(t, fs, fullDiskBlock/4)
		readAll(t, m.dir, files)
		st := e.status(t, m)
		if !st.CacheFull || st.UncachedReads == 0 || st.FetchErrors != 0 || st.CorruptBlocks != 0 {
			t.Fatalf("status after reads on a filesystem filled from outside: %+v; want cache_full, uncached reads, no fetch or corrupt blocks", st)
		}
		if st.CachedBytes != 0 {
			t.Errorf("%d bytes recorded as cached while the filesystem was full", st.CachedBytes)
		}
		// Room again: the same reads, reaching the daemon, fill the cache.
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		dropKernelCaches(t)
		readAll(t, m.dir, files)
		if st := e.status(t, m); st.CachedBytes < fullDiskSize || st.FetchErrors != 0 {
			t.Fatalf("status after the filesystem got room again: %+v; want blocks cached", st)
		}
		e.waitNoOpenFiles(t, m)
		e.drop(t, m)
		fullDiskCheckIndex(t, cache, byKey)
	})
}

// fullDiskLoop makes a small ext4 filesystem in an image file, mounts it
// (loop) and returns its root; it is unmounted when t ends. It skips t
// only if this machine cannot loop-mount at all.
func fullDiskLoop(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("losetup", "-f").CombinedOutput(); err != nil {
		t.Skipf("no loop device to put a small filesystem on (losetup -f: %v %s)", err, out)
	}
	img := filepath.Join(t.TempDir(), "cache.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, fullDiskImage); err != nil {
		t.Fatal(err)
	}
	// -m 0: no blocks reserved for root, who runs the daemon; the
	// filesystem is full when statfs says so.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount -o loop %s: %v\n%s", img, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
	})
	return dir
}

// fullDiskDataset uploads fullDiskFiles objects and returns them by
// mount-relative name and by S3 key.
func fullDiskDataset(t *testing.T, e *env) (files, byKey map[string][]byte) {
	t.Helper()
	files, byKey = map[string][]byte{}, map[string][]byte{}
	for i := range fullDiskFiles {
		b := bytes.Repeat([]byte(fmt.Sprintf("fulldisk %02d ", i)), fullDiskSize/12)
		for j := 0; j < len(b); j += 4096 {
			b[j] = byte(j >> 12) // no two blocks alike
		}
		name := fmt.Sprintf("%s/f%02d.bin", fullDiskDir, i)
		files[name] = b
		byKey[prefix+"/"+name] = b
	}
	e.srv.PutMany(t, bucket, byKey)
	return files, byKey
}

// fullDiskFill writes a file into the filesystem at root until it is full,
// then gives back leave bytes, and returns the file's path.
func fullDiskFill(t *testing.T, root string, leave int64) string {
	t.Helper()
	path := filepath.Join(root, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	var n int64
	for {
		w, err := f.Write(chunk)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(max(0, n-leave)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if free := freeBytes(t, root); free > leave+fullDiskBlock/2 {
		t.Fatalf("filled the filesystem, but %d bytes are free", free)
	}
	return path
}

// fullDiskCheckIndex checks the index of the (unmounted) cache dir with
// index.Check, then reads every block it records from its cache file and
// compares it with S3's bytes: a half-written block recorded would differ.
func fullDiskCheckIndex(t *testing.T, cache string, byKey map[string][]byte) {
	t.Helper()
	path := filepath.Join(cache, "index.db")
	if err := index.Check(path); err != nil {
		t.Fatalf("index after a full disk: %v", err)
	}
	db, err := index.Open(path, index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var blocks, wrong int
	err = db.Records(func(r index.Record) bool {
		want, ok := byKey[r.Key]
		if !ok {
			t.Errorf("record of a key never uploaded: %q", r.Key)
			return true
		}
		f, err := os.Open(filepath.Join(blockcache.FilesDir(cache), r.ID[:2], r.ID))
		if err != nil {
			t.Errorf("cache file of %s with %d blocks recorded: %v", r.Key, r.Present.Count(), err)
			return true
		}
		defer f.Close()
		for b := range r.Present.Len() {
			if !r.Present.Has(b) {
				continue
			}
			off := b * r.BlockSize
			got := make([]byte, min(r.BlockSize, r.Size-off))
			if _, err := f.ReadAt(got, off); err != nil || !bytes.Equal(got, want[off:off+int64(len(got))]) {
				wrong++
				t.Errorf("%s block %d is recorded but differs from S3's (err %v)", r.Key, b, err)
			}
			blocks++
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("index checked: %d recorded blocks match S3, %d differ", blocks, wrong)
	if blocks == 0 {
		t.Errorf("no block recorded at all: nothing was cached")
	}
}
