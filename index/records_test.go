package index

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestAddBlocksCreatesThenGrows(t *testing.T) {
	db := openTest(t)
	base := Record{ID: "id1", Key: "k", Version: "v1", Size: 2500, BlockSize: 1000, LastAccess: time.Unix(100, 0)}
	base.Present = NewBlocks(1) // wrong length on purpose: AddBlocks ignores it

	got, err := db.AddBlocks(base, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Present.Len() != 3 || !got.Present.Has(2) || got.Present.Count() != 1 || !got.LastAccess.Equal(base.LastAccess) {
		t.Fatalf("created record %+v", got)
	}
	got, err = db.AddBlocks(base, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Complete() {
		t.Errorf("after adding all blocks: %d of %d present", got.Present.Count(), got.Present.Len())
	}
	stored, ok, err := db.Record("id1")
	if err != nil || !ok || !recordEqual(stored, got) {
		t.Errorf("Record = %+v, %v, %v; want %+v", stored, ok, err, got)
	}
}

func TestAddBlocksRefusesBadInput(t *testing.T) {
	db := openTest(t)
	base := Record{ID: "id", Key: "k", Version: "v", Size: 10, BlockSize: 4}
	if _, err := db.AddBlocks(base, 0, 1); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		rec      Record
		first, n int64
	}{
		"past end":        {base, 2, 2},
		"negative first":  {base, -1, 1},
		"negative count":  {base, 1, -1},
		"empty ID":        {Record{Key: "k", Size: 1, BlockSize: 1}, 0, 1},
		"zero block size": {Record{ID: "z", Size: 1}, 0, 1},
		"other version":   {Record{ID: "id", Key: "k", Version: "v2", Size: 10, BlockSize: 4}, 0, 1},
		"other geometry":  {Record{ID: "id", Key: "k", Version: "v", Size: 10, BlockSize: 5}, 0, 1},
	} {
		if _, err := db.AddBlocks(c.rec, c.first, c.n); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	r, _, _ := db.Record("id")
	if r.Present.Count() != 1 || r.Version != "v" {
		t.Errorf("refused calls changed the record: %+v", r)
	}
}

// Many goroutines adding overlapping and disjoint ranges must end with the
// union of all of them, whatever the order of their transactions.
func TestAddBlocksConcurrentUnion(t *testing.T) {
	db := openTest(t)
	const blocks = 500
	base := Record{ID: "busy", Key: "k", Version: "v", Size: blocks*64 - 5, BlockSize: 64}
	var wg sync.WaitGroup
	errs := make(chan error, blocks)
	for g := range 50 {
		wg.Go(func() {
			// Goroutine g adds blocks g, g+50, g+100, ... in pairs, so
			// ranges overlap between neighbours; block 499 stays missing.
			for first := int64(g); first < blocks-1; first += 50 {
				n := min(int64(2), blocks-1-first)
				if _, err := db.AddBlocks(base, first, n); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r, ok, err := db.Record("busy")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if r.Present.Count() != blocks-1 || r.Present.FirstMissing(0) != blocks-1 {
		t.Errorf("after concurrent adds: %d present, first missing %d; want %d and %d",
			r.Present.Count(), r.Present.FirstMissing(0), blocks-1, blocks-1)
	}
}

func TestTouchAndDelete(t *testing.T) {
	db := openTest(t)
	base := Record{ID: "t", Key: "k", Version: "v", Size: 1, BlockSize: 1, LastAccess: time.Unix(1, 0)}
	if _, err := db.AddBlocks(base, 0, 1); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	if err := db.TouchAll(map[string]time.Time{"t": when}); err != nil {
		t.Fatal(err)
	}
	r, _, _ := db.Record("t")
	if !r.LastAccess.Equal(when) || !r.Complete() {
		t.Errorf("after TouchAll: %+v", r)
	}
	if err := db.TouchAll(map[string]time.Time{"missing": when}); err != nil {
		t.Errorf("TouchAll of a missing record: %v", err)
	}
	if _, ok, _ := db.Record("missing"); ok {
		t.Error("TouchAll created a record")
	}
	if old, ok, err := db.DeleteRecord("t"); err != nil || !ok || !old.LastAccess.Equal(when) {
		t.Fatalf("DeleteRecord = %+v, %v, %v; want the touched record", old, ok, err)
	}
	if _, ok, _ := db.Record("t"); ok {
		t.Error("record present after DeleteRecord")
	}
	if _, ok, err := db.DeleteRecord("t"); ok || err != nil {
		t.Errorf("deleting twice: %v, %v", ok, err)
	}
}

// addRecords stores n records with IDs r0000.., record i having i%3 of its
// 2 blocks present (so 0, 1 or 2 blocks). It writes them in one transaction:
// n AddBlocks calls would fsync n times.
func addRecords(t *testing.T, db *DB, n int) {
	t.Helper()
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		for i := range n {
			r := Record{ID: fmt.Sprintf("r%04d", i), Key: "k", Version: "v", Size: 150, BlockSize: 100, Present: NewBlocks(2)}
			for b := range int64(i % 3) {
				r.Present.Set(b)
			}
			if err := putRecord(tx, nil, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRecordsWalksAllInOrderAndStops(t *testing.T) {
	db := openTest(t)
	const n = 2*recordsChunk + 7 // crosses chunk boundaries
	addRecords(t, db, n)

	var ids []string
	if err := db.Records(func(r Record) bool { ids = append(ids, r.ID); return true }); err != nil {
		t.Fatal(err)
	}
	if len(ids) != n {
		t.Fatalf("walked %d records, want %d", len(ids), n)
	}
	for i, id := range ids {
		if want := fmt.Sprintf("r%04d", i); id != want {
			t.Fatalf("record %d is %s, want %s", i, id, want)
		}
	}

	seen := 0
	if err := db.Records(func(Record) bool { seen++; return seen < 3 }); err != nil {
		t.Fatal(err)
	}
	if seen != 3 {
		t.Errorf("fn returned false at the 3rd record but was called %d times", seen)
	}
}

// Eviction deletes records while walking them; that must neither deadlock
// nor skip records.
func TestRecordsCallbackMayWrite(t *testing.T) {
	db := openTest(t)
	const n = recordsChunk + 10
	addRecords(t, db, n)
	walked := 0
	err := db.Records(func(r Record) bool {
		walked++
		_, _, err := db.DeleteRecord(r.ID)
		return err == nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if walked != n {
		t.Errorf("walked %d records while deleting, want %d", walked, n)
	}
	s, _ := db.Stats()
	if s.Objects != 0 {
		t.Errorf("%d records left", s.Objects)
	}
}

func TestStats(t *testing.T) {
	db := openTest(t)
	addRecords(t, db, 6) // blocks present: 0,1,2,0,1,2 of 2 (100 + 50 bytes)
	s, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// Disk usage rounds each last block to 4096 bytes: 100, and 100+4096.
	want := Stats{Objects: 6, Complete: 2, Bytes: 2*100 + 2*150, DiskBytes: 2*100 + 2*(100+4096)}
	if s != want {
		t.Errorf("Stats = %+v, want %+v", s, want)
	}
}

func TestAddBlocksSumsRoundTrip(t *testing.T) {
	db := openTest(t)
	rec := Record{ID: "s1", Key: "k", Version: "v", Size: 5 << 20, BlockSize: 1 << 20}
	if _, err := db.AddBlocksSums(rec, 1, []uint32{11, 12}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AddBlocks(rec, 4, 1); err != nil { // no sum known
		t.Fatal(err)
	}
	got, ok, err := db.Record("s1")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	for i, want := range []uint32{0, 11, 12, 0, 0} {
		sum, has := got.Sum(int64(i))
		if sum != want || has != (want != 0) {
			t.Fatalf("block %d: sum %d (%v), want %d", i, sum, has, want)
		}
	}
	if got.Present.Count() != 3 {
		t.Fatalf("%d blocks present, want 3", got.Present.Count())
	}
	v, err := encodeRecord(got)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeRecord("s1", v)
	if err != nil || len(back.Sums) != 5 || back.Sums[2] != 12 {
		t.Fatalf("decode: %+v, %v", back, err)
	}
	if _, err := decodeRecord("s1", v[:len(v)-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated checksums: %v", err)
	}
}

// TestCommitsCountTransactions: Commits counts each write transaction
// once: separate updates one each, concurrent writes no more than once per
// call (AddBlocksMany's test counts one transaction for many adds), and a
// transaction that fails not at all.
func TestCommitsCountTransactions(t *testing.T) {
	db := openTest(t)
	c0 := db.Commits()
	for i := range 3 {
		if err := db.PutJob(Job{ID: fmt.Sprintf("j%d", i), Paths: []string{"x"}, Created: time.Unix(1, 0), State: JobRunning}); err != nil {
			t.Fatal(err)
		}
	}
	if got := db.Commits() - c0; got != 3 {
		t.Fatalf("3 updates counted %d commits", got)
	}
	if err := db.PutJob(Job{}); err == nil {
		t.Fatal("a job without an ID was stored")
	}
	if got := db.Commits() - c0; got != 3 {
		t.Fatalf("a refused update counted: %d commits", got)
	}
	c1 := db.Commits()
	const writers = 50
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			rec := Record{ID: fmt.Sprintf("r%d", i), Key: "k", Version: "v", Size: 10, BlockSize: 4}
			if _, err := db.AddBlocksSums(rec, 0, []uint32{1}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := db.Commits() - c1; got < 1 || got > writers {
		t.Fatalf("%d concurrent writes counted %d commits, want 1 to %d", writers, got, writers)
	}
}
