package test

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"s3cachefs/blockcache"
)

// duBytes is what du says the files under dir take on disk.
func duBytes(t *testing.T, dir string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-s", "--block-size=1", dir).Output()
	if err != nil {
		t.Fatalf("du %s: %v", dir, err)
	}
	n, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		t.Fatalf("du %s: %q", dir, out)
	}
	return n
}

// TestCacheLimit reads far more than --max-cache-size allows and checks
// with du that the cache never grew past it, while every byte read was
// right.
func TestCacheLimit(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	const limit = 6 << 20
	m := e.mount(t, "--max-cache-size", "6MiB")
	var total int64
	for _, name := range sortedNames(files) {
		total += int64(len(files[name]))
		readAll(t, m.dir, map[string][]byte{name: files[name]})
		e.waitNoOpenFiles(t, m) // closed files may be evicted
		// The folder's own blocks (4 KiB a level) are not cache data.
		if du := duBytes(t, blockcache.FilesDir(m.cache)) - 64<<10; du > limit {
			t.Fatalf("after reading %s the cache takes %d bytes on disk, over its %d limit", name, du, limit)
		}
	}
	if total < 3*limit {
		t.Fatalf("the dataset (%d bytes) is too small to test a %d-byte limit", total, limit)
	}
	s := e.status(t, m)
	if s.Evictions == 0 || s.UsedBytes > limit || s.CacheLimit != limit || s.CachedBytes > limit {
		t.Fatalf("status after reading %d bytes through a %d-byte cache: %+v, cached %d", total, limit, s, s.CachedBytes)
	}
}

// TestEvictionNone reads the dataset twice through a cache far smaller
// than it with --eviction none: every byte is right both times, nothing is
// ever evicted, the files cached in the first pass stay cached, and the
// second pass caches nothing new (what did not fit is read from S3 as it
// goes, uncached).
func TestEvictionNone(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	const limit = 6 << 20
	m := e.mount(t, "--max-cache-size", "6MiB", "--eviction", "none")
	for range 2 {
		for _, name := range sortedNames(files) {
			readAll(t, m.dir, map[string][]byte{name: files[name]})
		}
		e.waitNoOpenFiles(t, m)
	}
	first := e.status(t, m)
	for _, name := range sortedNames(files) {
		readAll(t, m.dir, map[string][]byte{name: files[name]})
	}
	e.waitNoOpenFiles(t, m)
	s := e.status(t, m)
	if s.Eviction != "none" || s.Evictions != 0 || s.UncachedReads == 0 || s.UsedBytes > limit {
		t.Fatalf("status after reading the dataset three times through a %d-byte cache with --eviction none: %+v", limit, s)
	}
	if s.BytesFromS3 != first.BytesFromS3 || s.CachedBytes != first.CachedBytes {
		t.Errorf("a later pass cached more: %d bytes from S3 into the cache (was %d), %d cached (was %d)",
			s.BytesFromS3, first.BytesFromS3, s.CachedBytes, first.CachedBytes)
	}
	if s.CachedBytes == 0 {
		t.Error("nothing cached at all")
	}
}

// TestMinFreeAndFullCache puts the cache on a small tmpfs: --min-free is
// kept while more than fits is read, and when an open file holds all the
// room there is, reads go to S3 uncached with correct bytes and status
// says the cache is full.
func TestMinFreeAndFullCache(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	cache := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", cache).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", cache).Run() })
	const minFree = 16 << 20
	m := e.mountAt(t, newMountpoint(t), cache, "--min-free", "16MiB")
	names := npzNames(files, "train")
	// Hold the biggest file open: it cannot be evicted.
	big := names[0]
	for _, n := range names {
		if len(files[n]) > len(files[big]) {
			big = n
		}
	}
	held, err := os.Open(filepath.Join(m.dir, big))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := io.Copy(io.Discard, held); err != nil {
		t.Fatal(err)
	}
	for _, name := range sortedNames(files) {
		readAll(t, m.dir, map[string][]byte{name: files[name]})
		if free := freeBytes(t, cache); free < minFree-(1<<20) {
			t.Fatalf("after reading %s only %d bytes are free, below --min-free %d", name, free, minFree)
		}
	}
	if s := e.status(t, m); s.UncachedReads == 0 || s.Evictions == 0 {
		t.Fatalf("status after reading past a small cache: %+v", s)
	}
}

// freeBytes is what statfs says is free for us under dir.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
