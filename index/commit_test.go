package index

import (
	"errors"
	"slices"
	"testing"
)

func TestAddBlocksManyCommitsOnce(t *testing.T) {
	db := openTest(t)
	if _, err := db.SetCurrent("k1", "old1"); err != nil {
		t.Fatal(err)
	}
	r1 := Record{ID: "new1", Key: "k1", Version: "v2", Size: 30, BlockSize: 10}
	r2 := Record{ID: "id2", Key: "k2", Version: "v", Size: 20, BlockSize: 10}
	before := db.Commits()
	res := db.AddBlocksMany([]BlockAdd{
		{Rec: r1, First: 0, Sums: []uint32{1}, Current: true},
		{Rec: r2, First: 1, Sums: []uint32{2}, Current: true},
		{Rec: r1, First: 2, Sums: []uint32{3}}, // sees the first add's block
	})
	if n := db.Commits() - before; n != 1 {
		t.Errorf("%d commits, want 1", n)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("add %d: %v", i, r.Err)
		}
	}
	if !slices.Equal(res[0].Stale, []string{"old1"}) || res[1].Stale != nil || res[2].Stale != nil {
		t.Errorf("stale %v %v %v, want [old1] [] []", res[0].Stale, res[1].Stale, res[2].Stale)
	}
	got, _, _ := db.Record("new1")
	if !got.Present.Has(0) || got.Present.Has(1) || !got.Present.Has(2) || got.Sums[0] != 1 || got.Sums[2] != 3 {
		t.Errorf("record new1 %+v", got)
	}
	for key, want := range map[string]string{"k1": "new1", "k2": "id2"} {
		if id, _, _ := db.Current(key); id != want {
			t.Errorf("current %s = %q, want %q", key, id, want)
		}
	}
	// The counters and the access order change with the records, in the
	// same transaction: 2 objects, 3 blocks of 10 bytes.
	if res[0].Stored.LastAccess.IsZero() || !res[2].Stored.Present.Has(0) {
		t.Errorf("stored records %+v, %+v: want dated, with the first add's block", res[0].Stored, res[2].Stored)
	}
	st, err := db.Stats()
	if err != nil || st.Objects != 2 || st.Bytes != 30 {
		t.Errorf("stats %+v, %v; want 2 objects, 30 bytes", st, err)
	}
	if acc, err := db.Oldest(AccessPos{}, 10); err != nil || len(acc) != 2 {
		t.Errorf("access order %+v, %v; want 2 entries", acc, err)
	}
}

func TestAddBlocksManyBadAddFailsAlone(t *testing.T) {
	db := openTest(t)
	good := Record{ID: "good", Key: "g", Version: "v", Size: 10, BlockSize: 10}
	stored := Record{ID: "s", Key: "s", Version: "v1", Size: 10, BlockSize: 10}
	if _, err := db.AddBlocksSums(stored, 0, []uint32{1}); err != nil {
		t.Fatal(err)
	}
	other := stored
	other.Version = "v2" // passes the checks, fails inside the transaction
	res := db.AddBlocksMany([]BlockAdd{
		{Rec: good, Sums: []uint32{1}, Current: true},
		{Rec: other, Sums: []uint32{2}},
		{Rec: good, First: 5, Sums: []uint32{3}}, // outside the object
	})
	if res[0].Err != nil || !errors.Is(res[1].Err, ErrInvalid) || !errors.Is(res[2].Err, ErrInvalid) {
		t.Fatalf("errors %v, %v, %v; want nil, ErrInvalid, ErrInvalid", res[0].Err, res[1].Err, res[2].Err)
	}
	if r, _, _ := db.Record("good"); !r.Complete() {
		t.Errorf("good add not recorded: %+v", r)
	}
	if id, _, _ := db.Current("g"); id != "good" {
		t.Errorf("current g = %q", id)
	}
	if r, _, _ := db.Record("s"); r.Version != "v1" || r.Sums[0] != 1 {
		t.Errorf("bad add changed the stored record: %+v", r)
	}
}
