package index

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
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

// pin pins paths, each planned with one object, for job.
func pin(t *testing.T, db *DB, job string, paths ...string) {
	t.Helper()
	m := make(map[string]int64)
	for _, p := range paths {
		m[p] = 1
	}
	if err := db.Pin(job, m); err != nil {
		t.Fatal(err)
	}
}

// assertPinsOf checks which jobs pin key (sorted job IDs).
func assertPinsOf(t *testing.T, db *DB, key string, wantJobs ...string) {
	t.Helper()
	var got []string
	for _, p := range db.PinsOf(key) {
		got = append(got, p.Job)
	}
	if !slices.Equal(got, wantJobs) {
		t.Errorf("PinsOf(%q) jobs = %q; want %q", key, got, wantJobs)
	}
	if db.PinnedKey(key) != (len(wantJobs) > 0) {
		t.Errorf("PinnedKey(%q) = %v; want %v", key, !(len(wantJobs) > 0), len(wantJobs) > 0)
	}
}

func assertPinnedCount(t *testing.T, db *DB, want int) {
	t.Helper()
	if n, err := db.PinnedCount(); err != nil || n != want {
		t.Errorf("PinnedCount = %d, %v; want %d", n, err, want)
	}
}

// A path covers its own key and what is under it as a folder, nothing
// that merely starts with the same bytes.
func TestPinPathsCoverKeys(t *testing.T) {
	db := openTest(t)
	putJobs(t, db, "j1", "j2", "root")
	pin(t, db, "j1", "ds/train", "ds/dev/a.npz", "ds/val/")
	pin(t, db, "j2", "ds/train/x")
	for key, want := range map[string][]string{
		"ds/train/x":     {"j1", "j2"},
		"ds/train/x/y":   {"j1", "j2"},
		"ds/train/y":     {"j1"},
		"ds/train":       {"j1"},
		"ds/trainx/y":    nil,
		"ds/dev/a.npz":   {"j1"},
		"ds/dev/a.npzz":  nil,
		"ds/dev/b.npz":   nil,
		"ds/val/z":       {"j1"}, // pinned as "ds/val/": the slash is dropped
		"ds":             nil,
		"other/ds/train": nil,
	} {
		assertPinsOf(t, db, key, want...)
	}
	pin(t, db, "root", "")
	assertPinsOf(t, db, "anything/at/all", "root")
}

// PinnedCount adds up what the outermost pinned paths planned, once per
// path: a path pinned by two jobs, or under another pinned path, does not
// count again.
func TestPinnedCountCountsOutermostPathsOnce(t *testing.T) {
	db := openTest(t)
	putJobs(t, db, "j1", "j2", "j3")
	assertPinnedCount(t, db, 0)
	for job, paths := range map[string]map[string]int64{
		"j1": {"ds/train": 5},
		"j2": {"ds/train/sub": 2, "ds/dev": 3},
		"j3": {"ds/train": 7},
	} {
		if err := db.Pin(job, paths); err != nil {
			t.Fatal(err)
		}
	}
	assertPinnedCount(t, db, 7+3)
	if err := db.Unpin("j3"); err != nil {
		t.Fatal(err)
	}
	assertPinnedCount(t, db, 5+3)
	if _, ok, _ := db.Job("j3"); !ok {
		t.Error("Unpin removed the job itself")
	}
}

func TestPinRefusesBadInput(t *testing.T) {
	db := openTest(t)
	putJobs(t, db, "j")
	for name, c := range map[string]struct {
		job   string
		paths map[string]int64
	}{
		"missing job":    {"nope", map[string]int64{"p": 1}},
		"empty job":      {"", map[string]int64{"p": 1}},
		"NUL in job":     {"a\x00b", map[string]int64{"p": 1}},
		"negative count": {"j", map[string]int64{"p": 1, "q": -1}},
	} {
		if err := db.Pin(c.job, c.paths); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	// A refused Pin stores nothing, not even its valid paths.
	assertPinnedCount(t, db, 0)
	assertPinsOf(t, db, "p")
}

// Pins die with their job (DeleteJob), in the index and in memory, and
// what is left survives a reopen.
func TestDeleteJobRemovesItsPins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	db := openAt(t, path)
	putJobs(t, db, "j1", "j2")
	pin(t, db, "j1", "a", "b")
	pin(t, db, "j2", "b")
	gen := db.PinsGen()
	if err := db.DeleteJob("j1"); err != nil {
		t.Fatal(err)
	}
	if db.PinsGen() == gen {
		t.Error("PinsGen did not move when pins went")
	}
	assertPinsOf(t, db, "a/x")
	assertPinsOf(t, db, "b/x", "j2")
	// Pinning for the deleted job is refused, so no orphan pin appears.
	if err := db.Pin("j1", map[string]int64{"a": 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Pin for a deleted job: err = %v, want ErrInvalid", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Check(path); err != nil {
		t.Fatal(err)
	}
	db = openAt(t, path)
	defer db.Close()
	if got := db.Pins(); !slices.Equal(got, []Pin{{Job: "j2", Path: "b", Objects: 1}}) {
		t.Errorf("after reopen Pins = %+v", got)
	}
}

// UnpinPaths drops pins on a path and under it, of every job, and refuses
// (dropping nothing) a path that a pin above it covers, naming that pin.
func TestUnpinPathsRefusesUnderAPinnedFolder(t *testing.T) {
	db := openTest(t)
	putJobs(t, db, "j1", "j2")
	pin(t, db, "j1", "ds/train")
	pin(t, db, "j2", "ds/train/a", "ds/dev")
	_, err := db.UnpinPaths([]string{"ds/dev", "ds/train/a/b"})
	var above *PinnedAboveError
	if !errors.As(err, &above) || !errors.Is(err, ErrPinnedAbove) || above.Pin.Job != "j1" || above.Pin.Path != "ds/train" {
		t.Fatalf("UnpinPaths under ds/train: %v; want a PinnedAboveError naming j1's ds/train", err)
	}
	assertPinsOf(t, db, "ds/dev/x", "j2") // refused whole: ds/dev is still pinned
	gen := db.PinsGen()
	got, err := db.UnpinPaths([]string{"ds/"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Pin{{Job: "j1", Path: "ds/train", Objects: 1}, {Job: "j2", Path: "ds/dev", Objects: 1}, {Job: "j2", Path: "ds/train/a", Objects: 1}}
	sortPins(got)
	if !slices.Equal(got, want) {
		t.Errorf("UnpinPaths(ds/) dropped %+v; want %+v", got, want)
	}
	if len(db.Pins()) != 0 || db.PinsGen() == gen {
		t.Errorf("pins left %+v, gen %d -> %d", db.Pins(), gen, db.PinsGen())
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
	pin(t, db, "2", "r1")
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
	assertPinsOf(t, db, "r1", "2")
}

func TestCancelJobDropsItsPinsOnlyWhileRunning(t *testing.T) {
	db := openTest(t)
	putJobs(t, db, "run", "done")
	if err := db.PutJob(Job{ID: "done", State: JobDone}); err != nil {
		t.Fatal(err)
	}
	pin(t, db, "run", "r1")
	pin(t, db, "done", "r1")
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
	assertPinsOf(t, db, "r1", "done")
	if _, ok, err := db.CancelJob("none", nil); ok || err != nil {
		t.Errorf("CancelJob(none) = %v, %v; want not found", ok, err)
	}
}

// Concurrent pinning, unpinning and checking keep memory and the index in
// step (run with -race): a reopen reads back what memory says.
func TestPinsConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	db := openAt(t, path)
	const jobs, paths = 4, 50
	var wg sync.WaitGroup
	for j := range jobs {
		id := fmt.Sprintf("j%d", j)
		putJobs(t, db, id)
		wg.Go(func() {
			m := make(map[string]int64)
			for p := range paths {
				m[fmt.Sprintf("%s/p%03d", id, p)] = 1
			}
			if err := db.Pin(id, m); err != nil {
				t.Error(err)
			}
			if _, err := db.UnpinPaths([]string{id + "/p000", id + "/p001"}); err != nil {
				t.Error(err)
			}
			db.PinnedKey(id + "/p020/x")
		})
	}
	wg.Wait()
	assertPinnedCount(t, db, jobs*(paths-2))
	before := db.Pins()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openAt(t, path)
	defer db.Close()
	if after := db.Pins(); !slices.Equal(before, after) {
		t.Errorf("memory had %d pins, the index %d", len(before), len(after))
	}
}
