package test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"s3cachefs/blockcache"
)

// TestChangedAndDeletedObjects changes one object and deletes another in
// S3 behind a mount with a short --metadata-ttl: after the TTL the tree
// shows S3's state, the new version is served (never a mix), and the data
// of the old version and of the deleted object leave the cache.
func TestChangedAndDeletedObjects(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	m := e.mount(t, "--metadata-ttl", "1s")
	changed, deleted := npzNames(files, "train")[0], npzNames(files, "dev")[0]
	for _, name := range []string{changed, deleted} {
		readAll(t, m.dir, map[string][]byte{name: files[name]})
	}
	e.waitNoOpenFiles(t, m)
	if st := e.status(t, m); st.CompleteObjects != 2 {
		t.Fatalf("%d objects cached, want 2", st.CompleteObjects)
	}

	newBytes := append(bytes.Clone(files[changed][:len(files[changed])/2]), "new version"...)
	local := filepath.Join(t.TempDir(), "new.npz")
	if err := os.WriteFile(local, newBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	e.awsCLI(t, "s3", "cp", "--no-progress", local, "s3://"+bucket+"/"+prefix+"/"+changed)
	e.awsCLI(t, "s3", "rm", "s3://"+bucket+"/"+prefix+"/"+deleted)

	// The listings expire after 1s; the kernel's entries within it.
	waitFor(t, 30*time.Second, deleted+" to disappear", func() bool {
		_, err := os.Stat(filepath.Join(m.dir, deleted))
		return errors.Is(err, fs.ErrNotExist)
	})
	waitFor(t, 30*time.Second, "the new version of "+changed, func() bool {
		got, err := os.ReadFile(filepath.Join(m.dir, changed))
		if err != nil {
			return false // ESTALE for an open of the old version is allowed
		}
		if !bytes.Equal(got, newBytes) && !bytes.Equal(got, files[changed]) {
			t.Fatalf("read of %s returned bytes of neither version", changed)
		}
		return bytes.Equal(got, newBytes)
	})
	e.waitNoOpenFiles(t, m)
	st := e.status(t, m)
	if st.Objects != 1 || st.CachedBytes != int64(len(newBytes)) {
		t.Fatalf("cache after the change: %d objects, %d bytes; want only the new version (%d bytes)",
			st.Objects, st.CachedBytes, len(newBytes))
	}
	cacheFiles, _ := filepath.Glob(filepath.Join(blockcache.FilesDir(m.cache), "*", "*"))
	if len(cacheFiles) != 1 {
		t.Fatalf("%d cache files left, want 1: %v", len(cacheFiles), cacheFiles)
	}
}
