package index

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openTest opens a fresh index in a temporary directory, closed at cleanup.
func openTest(t *testing.T) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "index.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	return db
}

func TestOpenCreatesPrivateFileAndReopens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if db.Path() != path {
		t.Errorf("Path() = %q, want %q", db.Path(), path)
	}
	if err := db.PutListing(Listing{Prefix: "a/", ListedAt: time.Unix(5, 0), Dirs: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("index file mode %v, want owner-only", perm)
	}

	db, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer db.Close()
	l, ok, err := db.Listing("a/")
	if err != nil || !ok || len(l.Dirs) != 1 || l.Dirs[0] != "x" {
		t.Errorf("after reopen Listing = %+v, %v, %v", l, ok, err)
	}
}

func TestOpenRefusesOtherSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, binary.AppendUvarint(nil, 99))
	})
	b.Close()
	if err != nil {
		t.Fatal(err)
	}

	db, err = Open(path, Options{})
	if !errors.Is(err, ErrSchema) {
		if db != nil {
			db.Close()
		}
		t.Fatalf("Open of a version 99 index: err = %v, want ErrSchema", err)
	}
	// The refused file must be closed again: a fresh Open must not be
	// locked out by a leaked handle.
	if _, err := Open(path, Options{}); !errors.Is(err, ErrSchema) {
		t.Errorf("second Open: err = %v, want ErrSchema", err)
	}
}

func TestOpenRefusesForeignBoltFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("someone-else"))
		return err
	})
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); !errors.Is(err, ErrSchema) {
		t.Errorf("Open of a foreign bbolt file: err = %v, want ErrSchema", err)
	}
}

func TestOpenRefusesGarbageFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "garbage.db")
	junk := make([]byte, 16384)
	for i := range junk {
		junk[i] = byte(i * 7)
	}
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open of a garbage file: err = %v, want ErrCorrupt", err)
	}
}

func TestOpenLockedInSameProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	first := openAt(t, path)

	start := time.Now()
	second, err := Open(path, Options{LockTimeout: 120 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("second Open: err = %v, want ErrLocked", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("second Open waited %v for a 120ms lock timeout", waited)
	}

	// Once the first holder closes, the file opens again.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	third, err := Open(path, Options{LockTimeout: 120 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	third.Close()
}

// openAt opens path, failing the test on error; the caller closes.
func openAt(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestOpenMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "index.db")
	if _, err := Open(path, Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open in a missing folder: err = %v, want ErrNotExist", err)
	}
}

func TestListingStoreAndDelete(t *testing.T) {
	db := openTest(t)
	at := time.Date(2025, 9, 19, 10, 0, 0, 123, time.UTC)
	root := Listing{Prefix: "", ListedAt: at, Dirs: []string{"dev", "train"},
		Files: []Object{{Key: "README", Size: 10, ETag: "e", LastModified: at}}}
	if err := db.PutListing(root); err != nil {
		t.Fatal(err)
	}
	got, ok, err := db.Listing("")
	if err != nil || !ok {
		t.Fatalf("Listing(\"\") = %v, %v", ok, err)
	}
	assertListingEqual(t, got, root)

	if _, ok, err := db.Listing("train/"); ok || err != nil {
		t.Errorf("Listing of an unlisted prefix = %v, %v; want absent", ok, err)
	}
	if err := db.DeleteListing(""); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := db.Listing(""); ok {
		t.Error("listing still present after DeleteListing")
	}
	if err := db.DeleteListing("never/"); err != nil {
		t.Errorf("DeleteListing of a missing listing: %v", err)
	}
}

func TestPutListingRefusesUnsorted(t *testing.T) {
	db := openTest(t)
	for _, l := range []Listing{
		{Dirs: []string{"b", "a"}},
		{Dirs: []string{"a", "a"}},
		{Files: []Object{{Key: "b"}, {Key: "a"}}},
		{Files: []Object{{Key: "a", Size: -1}}},
	} {
		if err := db.PutListing(l); !errors.Is(err, ErrInvalid) {
			t.Errorf("PutListing(%+v) = %v, want ErrInvalid", l, err)
		}
	}
}
