package main

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"s3cachefs/blockcache"
)

// TestPurgeCache: --purge deletes what a cache made in its dir (the files
// folder blockcache names, the index, the log) and nothing else, and the
// dir itself once that leaves it empty.
func TestPurgeCache(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	log := slog.New(slog.DiscardHandler)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := openIndex(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	c, err := blockcache.New(db, nil, blockcache.Options{Dir: dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(c.Close(), db.Close()); err != nil {
		t.Fatal(err)
	}
	files := blockcache.FilesDir(dir)
	if st, err := os.Stat(files); err != nil || !st.IsDir() {
		t.Fatalf("the cache did not make its files folder %s: %v", files, err)
	}
	for name, data := range map[string]string{logFileName: "log\n", "keep.txt": "not ours\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := purgeCache(dir); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{files, filepath.Join(dir, indexFileName), filepath.Join(dir, logFileName)} {
		if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left after purge (%v)", gone, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "keep.txt")); err != nil {
		t.Errorf("purge removed a file that is not the cache's: %v", err)
	}
	os.Remove(filepath.Join(dir, "keep.txt"))
	if err := purgeCache(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the empty cache dir is left after purge (%v)", err)
	}
}
