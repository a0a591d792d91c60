package index

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// putJobs stores an empty running job for each id.
func putJobs(t *testing.T, db *DB, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := db.PutJob(Job{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
}

// assertPinned checks Pinned(obj) against want (sorted job IDs).
func assertPinned(t *testing.T, db *DB, obj string, want ...string) {
	t.Helper()
	got, err := db.Pinned(obj)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("Pinned(%q) = %q, %v; want %q", obj, got, err, want)
	}
}

func assertPinnedCount(t *testing.T, db *DB, want int) {
	t.Helper()
	if n, err := db.PinnedCount(); err != nil || n != want {
		t.Errorf("PinnedCount = %d, %v; want %d", n, err, want)
	}
}

// assertJobPins checks the jobpins direction, which no exported method
// shows, and that every entry has its mirror in pins and vice versa.
func assertJobPins(t *testing.T, db *DB, jobID string, want ...string) {
	t.Helper()
	var got []string
	err := db.bolt.View(func(tx *bolt.Tx) error {
		pins, jobpins := tx.Bucket(bucketPins), tx.Bucket(bucketJobPins)
		if pins.Stats().KeyN != jobpins.Stats().KeyN {
			return fmt.Errorf("%d pins but %d jobpins", pins.Stats().KeyN, jobpins.Stats().KeyN)
		}
		return jobpins.ForEach(func(k, _ []byte) error {
			j, o, _ := strings.Cut(string(k), "\x00")
			if pins.Get(pinKey(o, j)) == nil {
				return fmt.Errorf("jobpins %q has no mirror in pins", k)
			}
			if j == jobID {
				got = append(got, o)
			}
			return nil
		})
	})
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("pins of job %q = %q, %v; want %q", jobID, got, err, want)
	}
}

func TestPinBothDirectionsAndCounts(t *testing.T) {
	db := openTest(t)
	putJobs(t, db, "j1", "j2", "j")
	assertPinnedCount(t, db, 0)
	// Unsorted with a duplicate; "o" is a prefix of "o1" and job "j" of
	// "j1", so the NUL separator must keep them apart.
	if err := db.Pin("j1", []string{"o3", "o1", "o", "o1"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Pin("j2", []string{"o1", "o4"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Pin("j", []string{"o4"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Pin("j1", []string{"o3"}); err != nil { // again: idempotent
		t.Fatal(err)
	}
	assertPinned(t, db, "o", "j1")
	assertPinned(t, db, "o1", "j1", "j2")
	assertPinned(t, db, "o4", "j", "j2")
	assertPinned(t, db, "o2")
	assertJobPins(t, db, "j1", "o", "o1", "o3")
	assertJobPins(t, db, "j", "o4")
	assertPinnedCount(t, db, 4)

	if err := db.Unpin("j1"); err != nil {
		t.Fatal(err)
	}
	assertPinned(t, db, "o1", "j2")
	assertPinned(t, db, "o")
	assertJobPins(t, db, "j1")
	assertJobPins(t, db, "j2", "o1", "o4")
	assertPinnedCount(t, db, 2)
	if _, ok, _ := db.Job("j1"); !ok {
		t.Error("Unpin removed the job itself")
	}

	if err := db.UnpinObjects([]string{"o4", "missing", "o4"}); err != nil {
		t.Fatal(err)
	}
	assertPinned(t, db, "o4")
	assertJobPins(t, db, "j2", "o1")
	assertJobPins(t, db, "j")
	assertPinnedCount(t, db, 1)
}

func TestPinRefusesBadInput(t *testing.T) {
	db := openTest(t)
	putJobs(t, db, "j")
	for name, c := range map[string]struct {
		job  string
		objs []string
	}{
		"missing job":   {"nope", []string{"o"}},
		"empty job":     {"", []string{"o"}},
		"empty object":  {"j", []string{"o", ""}},
		"NUL in object": {"j", []string{"a\x00b"}},
	} {
		if err := db.Pin(c.job, c.objs); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	// A refused Pin stores nothing, not even its valid objects.
	assertPinnedCount(t, db, 0)
}

func TestDeleteJobRemovesItsPins(t *testing.T) {
	db := openTest(t)
	putJobs(t, db, "j1", "j2")
	if err := db.Pin("j1", []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Pin("j2", []string{"b"}); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteJob("j1"); err != nil {
		t.Fatal(err)
	}
	assertPinned(t, db, "a")
	assertPinned(t, db, "b", "j2")
	assertJobPins(t, db, "j1")
	assertPinnedCount(t, db, 1)
	// Pinning for the deleted job is refused, so no orphan pin appears.
	if err := db.Pin("j1", []string{"a"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Pin for a deleted job: err = %v, want ErrInvalid", err)
	}
}

func TestDeleteRecordRemovesItsPins(t *testing.T) {
	db := openTest(t)
	putJobs(t, db, "j1", "j2")
	for _, id := range []string{"r1", "r2"} {
		if _, err := db.AddBlocks(Record{ID: id, Key: "k/" + id, Size: 10, BlockSize: 4, LastAccess: time.Unix(1, 0)}, 0, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Pin("j1", []string{"r1", "r2"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Pin("j2", []string{"r1"}); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteRecord("r1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := db.Record("r1"); ok {
		t.Error("record still there")
	}
	assertPinned(t, db, "r1")
	assertPinned(t, db, "r2", "j1")
	assertJobPins(t, db, "j1", "r2")
	assertJobPins(t, db, "j2")
	assertPinnedCount(t, db, 1)
}

func TestResetRecordKeepsItsPins(t *testing.T) {
	db := openTest(t)
	putJobs(t, db, "j1", "j2")
	if _, err := db.AddBlocks(Record{ID: "r1", Key: "k/r1", Size: 10, BlockSize: 4, LastAccess: time.Unix(1, 0)}, 0, 2); err != nil {
		t.Fatal(err)
	}
	for _, j := range []string{"j1", "j2"} {
		if err := db.Pin(j, []string{"r1"}); err != nil {
			t.Fatal(err)
		}
	}
	old, ok, err := db.ResetRecord("r1")
	if err != nil || !ok || old.Present.Count() != 2 {
		t.Fatalf("ResetRecord = %+v, %v, %v; want the record with its 2 blocks", old, ok, err)
	}
	if _, ok, _ := db.Record("r1"); ok {
		t.Error("record still there")
	}
	assertPinned(t, db, "r1", "j1", "j2")
	assertJobPins(t, db, "j1", "r1")
	if _, ok, err := db.ResetRecord("r1"); ok || err != nil {
		t.Errorf("second ResetRecord = %v, %v; want nothing to reset", ok, err)
	}
}

func TestPruneJobsKeepsNewestPinnedAndRunning(t *testing.T) {
	db := openTest(t)
	for _, j := range []Job{
		{ID: "1", State: JobDone}, {ID: "2", State: JobFailed}, {ID: "3", State: JobRunning},
		{ID: "4", State: JobCancelled}, {ID: "5", State: JobDone}, {ID: "6", State: JobDone},
	} {
		if err := db.PutJob(j); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Pin("2", []string{"r1"}); err != nil {
		t.Fatal(err)
	}
	pruned, err := db.PruneJobs(2)
	if err != nil || !slices.Equal(pruned, []string{"1", "4"}) {
		t.Fatalf("PruneJobs(2) = %q, %v; want [1 4]", pruned, err)
	}
	var left []string
	jobs, _ := db.Jobs()
	for _, j := range jobs {
		left = append(left, j.ID)
	}
	if !slices.Equal(left, []string{"2", "3", "5", "6"}) {
		t.Fatalf("jobs left %q; want the pinned, the running and the newest two", left)
	}
	assertPinned(t, db, "r1", "2")
}

func TestCancelJobDropsItsPinsOnlyWhileRunning(t *testing.T) {
	db := openTest(t)
	putJobs(t, db, "run", "done")
	if err := db.PutJob(Job{ID: "done", State: JobDone}); err != nil {
		t.Fatal(err)
	}
	for _, j := range []string{"run", "done"} {
		if err := db.Pin(j, []string{"r1"}); err != nil {
			t.Fatal(err)
		}
	}
	was, ok, err := db.CancelJob("run", []string{"k/x"})
	if err != nil || !ok || was != JobRunning {
		t.Fatalf("CancelJob(run) = %v, %v, %v", was, ok, err)
	}
	if j, _, _ := db.Job("run"); j.State != JobCancelled || !slices.Equal(j.Failed, []string{"k/x"}) {
		t.Errorf("cancelled job stored as %+v", j)
	}
	if was, ok, err := db.CancelJob("done", nil); err != nil || !ok || was != JobDone {
		t.Fatalf("CancelJob(done) = %v, %v, %v", was, ok, err)
	}
	if j, _, _ := db.Job("done"); j.State != JobDone {
		t.Errorf("a done job became %v", j.State)
	}
	assertPinned(t, db, "r1", "done")
	assertJobPins(t, db, "run")
	if _, ok, err := db.CancelJob("none", nil); ok || err != nil {
		t.Errorf("CancelJob(none) = %v, %v; want not found", ok, err)
	}
}

// Concurrent pinning, unpinning and deleting keep the two directions in
// step (run with -race).
func TestPinsConcurrent(t *testing.T) {
	db := openTest(t)
	const jobs, objs = 4, 50
	var wg sync.WaitGroup
	for j := range jobs {
		id := fmt.Sprintf("j%d", j)
		putJobs(t, db, id)
		wg.Go(func() {
			var ids []string
			for o := range objs {
				ids = append(ids, fmt.Sprintf("o%03d", o))
			}
			if err := db.Pin(id, ids); err != nil {
				t.Error(err)
			}
			if err := db.UnpinObjects(ids[:10]); err != nil {
				t.Error(err)
			}
			if _, err := db.Pinned(ids[20]); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Go(func() {
		if err := db.DeleteRecord("o049"); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	// Whatever the interleaving, each job's surviving pins are mirrored.
	if got, err := db.Pinned("o030"); err != nil || len(got) != jobs {
		t.Errorf("Pinned(o030) = %q, %v; want all %d jobs", got, err, jobs)
	}
	for j := range jobs {
		assertJobPinsMirrored(t, db, fmt.Sprintf("j%d", j))
	}
	if n, err := db.PinnedCount(); err != nil || n < objs-11 || n > objs-10 {
		t.Errorf("PinnedCount = %d, %v; want %d or %d", n, err, objs-11, objs-10)
	}
}

// assertJobPinsMirrored checks that the pins of jobID are mirrored, without
// fixing which ones they are.
func assertJobPinsMirrored(t *testing.T, db *DB, jobID string) {
	t.Helper()
	var objs []string
	_ = db.bolt.View(func(tx *bolt.Tx) error { // cannot fail: no error returned inside
		c := tx.Bucket(bucketJobPins).Cursor()
		p := pinKey(jobID, "")
		for k, _ := c.Seek(p); k != nil && strings.HasPrefix(string(k), string(p)); k, _ = c.Next() {
			objs = append(objs, string(k[len(p):]))
		}
		return nil
	})
	assertJobPins(t, db, jobID, objs...)
}
