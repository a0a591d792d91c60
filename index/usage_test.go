package index

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// assertUsageMatchesWalk compares the counters and the access order with
// a walk of the records.
func assertUsageMatchesWalk(t *testing.T, db *DB) {
	t.Helper()
	var want Stats
	var recs []Record
	if err := db.Records(func(r Record) bool { want.add(r, 1); recs = append(recs, r); return true }); err != nil {
		t.Fatal(err)
	}
	if got, err := db.Stats(); err != nil || got != want {
		t.Errorf("Stats = %+v, %v; a walk adds up to %+v", got, err, want)
	}
	slices.SortStableFunc(recs, func(a, b Record) int { return a.LastAccess.Compare(b.LastAccess) })
	var order []string
	var pos AccessPos
	for {
		chunk, err := db.Oldest(pos, 2) // small chunks: continuing must not skip or repeat
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range chunk {
			order = append(order, fmt.Sprintf("%s=%s@%s:%d", a.ID, a.Key, a.LastAccess, a.DiskBytes))
			pos = a.Pos
		}
		if len(chunk) < 2 {
			break
		}
	}
	var wantOrder []string
	for _, r := range recs {
		wantOrder = append(wantOrder, fmt.Sprintf("%s=%s@%s:%d", r.ID, r.Key, r.LastAccess, r.DiskUsage()))
	}
	if !slices.Equal(order, wantOrder) {
		t.Errorf("access order %q; want %q", order, wantOrder)
	}
}

// Every kind of record write keeps the counters and the access order in
// step with the records, and a reopened file agrees with a full Check.
func TestCountersAndAccessOrderFollowEveryWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	db := openAt(t, path)
	at := func(s int64) time.Time { return time.Unix(1_700_000_000+s, 0).UTC() }
	for i, id := range []string{"c", "a", "b"} {
		rec := Record{ID: id, Key: "k/" + id, Version: "v", Size: 10_000, BlockSize: 4096, LastAccess: at(int64(10 - i))}
		if _, err := db.AddBlocks(rec, 0, 2); err != nil {
			t.Fatal(err)
		}
		if _, err := db.SetCurrent(rec.Key, id); err != nil {
			t.Fatal(err)
		}
	}
	assertUsageMatchesWalk(t, db)
	steps := []struct {
		name string
		do   func() error
	}{
		{"grow to complete", func() error {
			_, err := db.AddBlocks(Record{ID: "a", Key: "k/a", Version: "v", Size: 10_000, BlockSize: 4096}, 2, 1)
			return err
		}},
		{"remove a block", func() error { return db.RemoveBlock("a", 0) }},
		{"touch", func() error { return db.TouchAll(map[string]time.Time{"c": at(100), "b": at(1)}) }},
		{"reset", func() error { _, _, err := db.ResetRecord("b"); return err }},
		{"delete", func() error { _, _, err := db.DeleteRecord("c"); return err }},
		{"new without access time", func() error {
			_, err := db.AddBlocks(Record{ID: "d", Key: "k/d", Version: "v", Size: 1, BlockSize: 4096}, 0, 1)
			return err
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		assertUsageMatchesWalk(t, db)
	}
	if r, _, _ := db.Record("d"); time.Since(r.LastAccess) > time.Hour {
		t.Errorf("a new record got LastAccess %v, want about now", r.LastAccess)
	}
	// Deleting c pruned its current entry; resetting b kept b's.
	if _, ok, _ := db.Current("k/c"); ok {
		t.Error("current entry of a deleted record is still there")
	}
	if id, ok, _ := db.Current("k/b"); !ok || id != "b" {
		t.Errorf("current of a reset record = %q, %v; want kept", id, ok)
	}
	// A current entry naming another version survives the old one's delete.
	if _, err := db.SetCurrent("k/a", "a2"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.DeleteRecord("a"); err != nil {
		t.Fatal(err)
	}
	if id, _, _ := db.Current("k/a"); id != "a2" {
		t.Errorf("current of k/a = %q after deleting the old version; want a2", id)
	}
	assertUsageMatchesWalk(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Check(path); err != nil {
		t.Fatal(err)
	}
}

// A schema 1 file, as the previous version wrote it, is upgraded on Open:
// counters and access order built from its records, each job's object
// pins turned into pins on its paths, current entries of vanished records
// dropped, and the old pin buckets gone.
func TestUpgradeFromSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	at := func(s int64) time.Time { return time.Unix(1_700_000_000+s, 0).UTC() }
	recs := []Record{
		{ID: "ida", Key: "ds/train/a", Version: "v", Size: 5, BlockSize: 4, LastAccess: at(3)},
		{ID: "idb", Key: "ds/train/sub/b", Version: "v", Size: 5, BlockSize: 4, LastAccess: at(1)},
		{ID: "idc", Key: "ds/dev/c", Version: "v", Size: 5, BlockSize: 4, LastAccess: at(2)},
		{ID: "idx", Key: "ds/test/x", Version: "v", Size: 5, BlockSize: 4, LastAccess: at(4)},
	}
	jobs := map[string]Job{
		"j": {ID: "j", Paths: []string{"train/"}, State: JobDone},
		"k": {ID: "k", Paths: []string{"dev/c"}, State: JobDone},
		"r": {ID: "r", Paths: []string{"elsewhere"}, State: JobRunning},
	}
	pinned := map[string][]string{"j": {"ida", "idb"}, "k": {"idc"}, "r": {"not-cached"}}
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		bk := map[string]*bolt.Bucket{}
		for _, name := range []string{"meta", "listings", "records", "jobs", "pins", "jobpins", "current"} {
			if bk[name], err = tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		if err := bk["meta"].Put(keySchema, binary.AppendUvarint(nil, 1)); err != nil {
			return err
		}
		for i, r := range recs {
			r.Present = NewBlocks(2)
			r.Present.Set(int64(i % 2)) // a: block 0 (4 bytes), b: block 1 (1 byte), ...
			v, err := encodeRecord(r)
			if err != nil {
				return err
			}
			if err := bk["records"].Put([]byte(r.ID), v); err != nil {
				return err
			}
		}
		for id, j := range jobs {
			v, err := encodeJob(j)
			if err != nil {
				return err
			}
			if err := bk["jobs"].Put([]byte(id), v); err != nil {
				return err
			}
			for _, o := range pinned[id] {
				if err := bk["jobpins"].Put([]byte(id+"\x00"+o), nil); err != nil {
					return err
				}
				if err := bk["pins"].Put([]byte(o+"\x00"+id), nil); err != nil {
					return err
				}
			}
		}
		if err := bk["current"].Put([]byte("ds/train/a"), encodeCurrent("ida")); err != nil {
			return err
		}
		return bk["current"].Put([]byte("ds/gone"), encodeCurrent("idgone"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	db := openAt(t, path)
	if st, _ := db.Stats(); st != (Stats{Objects: 4, Bytes: 4 + 1 + 4 + 1, DiskBytes: 4 + 4096 + 4 + 4096}) {
		t.Errorf("upgraded counters %+v", st)
	}
	assertUsageMatchesWalk(t, db)
	wantPins := []Pin{{Job: "j", Path: "ds/train", Objects: 2}, {Job: "k", Path: "ds/dev/c", Objects: 1}}
	if got := db.Pins(); !slices.Equal(got, wantPins) {
		t.Errorf("upgraded pins %+v; want %+v", got, wantPins)
	}
	if db.PinnedKey("ds/test/x") || !db.PinnedKey("ds/train/new") {
		t.Error("upgraded pins cover the wrong keys")
	}
	if _, ok, _ := db.Current("ds/gone"); ok {
		t.Error("current entry of a vanished record kept")
	}
	if id, ok, _ := db.Current("ds/train/a"); !ok || id != "ida" {
		t.Errorf("current of a cached record = %q, %v", id, ok)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Check(path); err != nil {
		t.Fatal(err)
	}
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("pins")) != nil || tx.Bucket([]byte("jobpins")) != nil {
			t.Error("schema 1 pin buckets left behind")
		}
		if v, _ := binary.Uvarint(tx.Bucket(bucketMeta).Get(keySchema)); v != SchemaVersion {
			t.Errorf("schema %d after upgrade", v)
		}
		return nil
	})
}

// The mount's prefix is found from the pinned keys; a key no path covers
// keeps a pin of its own.
func TestPinPathsOf(t *testing.T) {
	for _, c := range []struct {
		rels, keys []string
		want       map[string]int64
	}{
		{[]string{"train"}, []string{"p/q/train/a", "p/q/train/b/c"}, map[string]int64{"p/q/train": 2}},
		{[]string{""}, []string{"p/a", "p/b"}, map[string]int64{"": 2}},
		{[]string{"a", "x/y"}, []string{"m/a", "m/x/y"}, map[string]int64{"m/a": 1, "m/x/y": 1}},
		{[]string{"train"}, []string{"m/train/a", "odd/key"}, map[string]int64{"m/train": 1, "odd/key": 1}},
		{[]string{"train"}, nil, map[string]int64{}},
	} {
		got := pinPathsOf(c.rels, c.keys)
		if len(got) != len(c.want) {
			t.Errorf("pinPathsOf(%q, %q) = %v; want %v", c.rels, c.keys, got, c.want)
			continue
		}
		for p, n := range c.want {
			if got[p] != n {
				t.Errorf("pinPathsOf(%q, %q) = %v; want %v", c.rels, c.keys, got, c.want)
			}
		}
	}
}
