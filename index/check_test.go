package index

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// checkFixture writes an index holding one of each kind of value (a
// listing, a record with sums, a job pinning it, a current version),
// closes it and returns its path.
func checkFixture(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "index.db")
	db := openAt(t, path)
	defer db.Close()
	if err := db.PutListing(sampleListing()); err != nil {
		t.Fatal(err)
	}
	rec := sampleRecord()
	rec.Present = NewBlocks(rec.Present.Len())
	if _, err := db.AddBlocksSums(rec, 2, []uint32{11, 12, 13}); err != nil {
		t.Fatal(err)
	}
	job := sampleJob()
	if err := db.PutJob(job); err != nil {
		t.Fatal(err)
	}
	if err := db.Pin(job.ID, map[string]int64{rec.Key: 1, "not/fetched/yet/": 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SetCurrent(rec.Key, rec.ID); err != nil {
		t.Fatal(err)
	}
	return path
}

// rawUpdate edits the closed file at path with bbolt directly, as damage
// or a foreign writer would.
func rawUpdate(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func TestCheckPassesSoundIndex(t *testing.T) {
	path := checkFixture(t)
	if err := Check(path); err != nil {
		t.Fatalf("Check of a sound index: %v", err)
	}
	// Check writes nothing: the file still opens and passes again.
	db := openAt(t, path)
	db.Close()
	if err := Check(path); err != nil {
		t.Fatalf("second Check: %v", err)
	}
}

func TestCheckRefusesLockedIndex(t *testing.T) {
	path := checkFixture(t)
	db := openAt(t, path)
	defer db.Close()
	if err := Check(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("Check while a DB holds the file: %v, want ErrLocked", err)
	}
}

func TestCheckFindsBadValues(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(tx *bolt.Tx) error
		want  error
		where string // a word the problem names
	}{
		{"record garbage", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketRecords).Put([]byte("ab12"), []byte{9, 9, 9})
		}, ErrCorrupt, "records"},
		{"record truncated", func(tx *bolt.Tx) error {
			v, _ := encodeRecord(Record{ID: "x", Size: 10, BlockSize: 4, Present: NewBlocks(3)})
			return tx.Bucket(bucketRecords).Put([]byte("x"), v[:len(v)-1])
		}, ErrCorrupt, "records"},
		{"listing key", func(tx *bolt.Tx) error {
			v, _ := encodeListingV1(Listing{Prefix: "p/"})
			return tx.Bucket(bucketListings).Put([]byte("p/"), v)
		}, ErrCorrupt, "listing key"},
		{"schema 1 listing value", func(tx *bolt.Tx) error {
			v, _ := encodeListingV1(Listing{Prefix: "p/"})
			return tx.Bucket(bucketListings).Put([]byte("/p/"), v)
		}, ErrCorrupt, "not a folder bucket"},
		{"listing entry garbage", func(tx *bolt.Tx) error {
			return folderOf(tx).Put([]byte("a.npz"), []byte{1, 7})
		}, ErrCorrupt, "entry"},
		{"listing entry count", func(tx *bolt.Tx) error {
			return folderOf(tx).Put([]byte("extra"), encodeEntry(Entry{IsDir: true}))
		}, ErrCorrupt, "counts"},
		{"listing bad name", func(tx *bolt.Tx) error {
			fb := folderOf(tx)
			if err := fb.Delete([]byte("dev")); err != nil {
				return err
			}
			return fb.Put([]byte(".."), encodeEntry(Entry{IsDir: true}))
		}, ErrCorrupt, "reserved name"},
		{"listing without folder info", func(tx *bolt.Tx) error {
			return folderOf(tx).Delete(metaKey)
		}, ErrCorrupt, "no folder info"},
		{"job garbage", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketJobs).Put([]byte("j"), []byte{1})
		}, ErrCorrupt, "jobs"},
		{"current garbage", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketCurrent).Put([]byte("k"), []byte{1, 0})
		}, ErrCorrupt, "current"},
		{"pin count garbage", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketPathPins).Put(pathPinKey(sampleJob().ID, "p"), []byte{0xff})
		}, ErrCorrupt, "pathpins"},
		{"pin of a deleted job", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketJobs).Delete([]byte(sampleJob().ID))
		}, ErrCorrupt, "not stored"},
		{"malformed pin", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketPathPins).Put([]byte("no-separator"), []byte{0})
		}, ErrCorrupt, "no job"},
		{"counters off", func(tx *bolt.Tx) error {
			s, err := readUsage(tx)
			s.Complete++
			return errors.Join(err, writeUsage(tx, s))
		}, ErrCorrupt, "counters"},
		{"access entry lost", func(tx *bolt.Tx) error {
			k, _ := tx.Bucket(bucketAccess).Cursor().First()
			return tx.Bucket(bucketAccess).Delete(k)
		}, ErrCorrupt, "has no entry"},
		{"access entry stray", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketAccess).Put(accessKey("gone", time.Now()), []byte{0, 'k'})
		}, ErrCorrupt, "2 entries for 1 records"},
		{"missing bucket", func(tx *bolt.Tx) error {
			return tx.DeleteBucket(bucketJobs)
		}, ErrCorrupt, "missing"},
		{"schema version", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keySchema, []byte{99})
		}, ErrSchema, "version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := checkFixture(t)
			rawUpdate(t, path, tc.edit)
			err := Check(path)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Check: %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.where) {
				t.Errorf("Check: %v, want it to name %q", err, tc.where)
			}
		})
	}
}

// TestCheckFindsDamagedPages zeroes the data pages of the file, as a torn
// write below bbolt would: bbolt's own check (or Open) must notice.
func TestCheckFindsDamagedPages(t *testing.T) {
	path := checkFixture(t)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	if len(b) < 5*page {
		t.Fatalf("index of %d bytes is too small to damage past its meta pages", len(b))
	}
	// Pages 0 and 1 are the meta pages, 2 the free list; the rest hold
	// the buckets.
	clear(b[3*page:])
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Check(path); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Check of a file with zeroed pages: %v, want ErrCorrupt", err)
	}
}

func TestCheckMissingFile(t *testing.T) {
	err := Check(filepath.Join(t.TempDir(), "none.db"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Check of a missing file: %v, want ErrNotExist", err)
	}
}

// folderOf is the folder bucket of sampleListing in a checkFixture file.
func folderOf(tx *bolt.Tx) *bolt.Bucket {
	return tx.Bucket(bucketListings).Bucket(listingKey(sampleListing().Prefix))
}
