package blockcache

import (
	"fmt"
	"sync"
	"testing"

	"s3cachefs/index"
)

// Adds queued while a commit is running share the next transaction; an add
// made while none runs commits at once, by itself.
func TestGroupCommitSharesTransactions(t *testing.T) {
	f := newFixture(t, Options{})
	g := newGroupCommit(f.db)
	add := func(i int) index.BlockAdd {
		return index.BlockAdd{Rec: index.Record{ID: fmt.Sprint("id", i), Key: fmt.Sprint("k", i), Version: "v",
			Size: 10, BlockSize: 10}, Sums: []uint32{uint32(i + 1)}, Current: true}
	}
	before := f.db.Commits()
	var ps []*pendingAdd
	for i := range 50 {
		ps = append(ps, g.enqueue(add(i), nil)) // the first leads, the rest queue behind it
	}
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() {
			if r := g.wait(p); r.Err != nil {
				t.Errorf("add %d: %v", i, r.Err)
			}
		})
	}
	wg.Wait()
	if n := f.db.Commits() - before; n != 1 {
		t.Errorf("50 queued adds took %d commits, want 1", n)
	}
	if r := g.wait(g.enqueue(add(50), nil)); r.Err != nil || f.db.Commits()-before != 2 {
		t.Errorf("add on an idle group: %v, %d commits in all, want 2", r.Err, f.db.Commits()-before)
	}
	for i := range 51 {
		rec, ok, _ := f.db.Record(fmt.Sprint("id", i))
		id, _, _ := f.db.Current(fmt.Sprint("k", i))
		if !ok || !rec.Complete() || rec.Sums[0] != uint32(i+1) || id != rec.ID {
			t.Errorf("add %d: record %+v (%v), current %q", i, rec, ok, id)
		}
	}
}
