package tier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"s3cachefs/blockcache/internal/cachetest"
	"s3cachefs/index"
)

const gcGrace = 15 * time.Minute

// gcTier is a folder tier holding n entries of size bytes each, all of the
// same file size, keys k0, k1, ...
func gcTier(t *testing.T, n, size int) (*Folder, []Version) {
	t.Helper()
	f, err := OpenFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var vs []Version
	for i := range n {
		data := cachetest.RandBytes(uint64(100+i), size)
		v := Version{Bucket: "b", Key: fmt.Sprintf("k%d", i), ETag: s3ETag(data, 0), Size: int64(size)}
		if err := f.Publish(context.Background(), v, bytes.NewReader(data), mib, blockSums(data, mib), nil); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	return f, vs
}

// fileSize is the size of v's entry file.
func fileSize(t *testing.T, f *Folder, v Version) int64 {
	t.Helper()
	fi, err := os.Stat(f.entryPath(Name(v)))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// setTimes sets the access and modification times of v's entry.
func setTimes(t *testing.T, f *Folder, v Version, atime, mtime time.Time) {
	t.Helper()
	if err := os.Chtimes(f.entryPath(Name(v)), atime, mtime); err != nil {
		t.Fatal(err)
	}
}

// present reports which of vs still have an entry in objects/.
func present(f *Folder, vs []Version) []bool {
	out := make([]bool, len(vs))
	for i, v := range vs {
		_, err := os.Stat(f.entryPath(Name(v)))
		out[i] = err == nil
	}
	return out
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(des)
}

func runGC(t *testing.T, f *Folder, maxSize int64, now time.Time) GCStats {
	t.Helper()
	st, err := f.GC(context.Background(), maxSize, gcGrace, now)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// GC removes the least recently used entries first, by the later of their
// access and modification times, until the rest fit; the stats say so.
func TestGCLeastRecentlyUsedFirst(t *testing.T) {
	f, vs := gcTier(t, 4, 1000)
	size := fileSize(t, f, vs[0])
	now := time.Now()
	h := func(n float64) time.Time { return now.Add(time.Duration(-n * float64(time.Hour))) }
	setTimes(t, f, vs[0], h(1), h(5))   // used 1h ago
	setTimes(t, f, vs[1], h(2), h(5))   // used 2h ago: first to go
	setTimes(t, f, vs[2], h(5), h(0.5)) // published 30 min ago, never read since
	setTimes(t, f, vs[3], h(1.5), h(5)) // used 1.5h ago: second to go
	st := runGC(t, f, 2*size, now)
	if got, want := present(f, vs), []bool{true, false, true, false}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("entries left %v, want %v", got, want)
	}
	want := GCStats{Entries: 4, Bytes: 4 * size, Removed: 2, RemovedBytes: 2 * size, Left: 2, LeftBytes: 2 * size, TrashKept: 2, TrashKeptBytes: 2 * size}
	if st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if n := countFiles(t, f.trashDir()); n != 2 {
		t.Errorf("%d files in trash, want the 2 removed", n)
	}
	// Nothing more to do: a second run removes nothing.
	st = runGC(t, f, 2*size, now)
	if st.Removed != 0 || st.Left != 2 || st.TrashDeleted != 0 || st.TrashKept != 2 {
		t.Errorf("second run: %+v, want nothing removed", st)
	}
	// A limit between sizes leaves at most that much.
	st = runGC(t, f, 2*size-1, now)
	if p := present(f, vs); st.Removed != 1 || st.LeftBytes != size || p[0] || !p[2] {
		t.Errorf("limit just under two entries: %+v, want the entry used 1h ago removed and the one published 30 min ago kept", st)
	}
}

// A limit of 0 removes every entry.
func TestGCMaxSizeZero(t *testing.T) {
	f, vs := gcTier(t, 3, 10)
	st := runGC(t, f, 0, time.Now())
	if st.Removed != 3 || st.Left != 0 || st.LeftBytes != 0 {
		t.Errorf("stats %+v, want all 3 removed", st)
	}
	for i, p := range present(f, vs) {
		if p {
			t.Errorf("entry %d left", i)
		}
	}
}

// A node that opened an entry before GC trashed it reads all of it after,
// and GC unlinks it only once it has been in the trash for the grace.
func TestGCReaderKeepsTrashedEntry(t *testing.T) {
	f, vs := gcTier(t, 1, 3*mib+5)
	data := cachetest.RandBytes(100, 3*mib+5)
	e, err := f.Open(context.Background(), vs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	now := time.Now()
	if st := runGC(t, f, 0, now); st.Removed != 1 {
		t.Fatalf("stats %+v, want the entry removed", st)
	}
	if _, err := f.Open(context.Background(), vs[0]); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("Open after GC: %v, want ErrNotExist", err)
	}
	if got := readEntry(t, e, vs[0].Size); !bytes.Equal(got, data) {
		t.Errorf("the open reader read %d bytes after GC, not the object's %d", len(got), len(data))
	}
	if st := runGC(t, f, 0, now.Add(gcGrace-time.Second)); st.TrashDeleted != 0 || st.TrashKept != 1 {
		t.Errorf("within the grace: %+v, want the trashed entry kept", st)
	}
	if st := runGC(t, f, 0, now.Add(gcGrace)); st.TrashDeleted != 1 || st.TrashDeletedBytes == 0 || st.TrashKept != 0 {
		t.Errorf("after the grace: %+v, want the trashed entry deleted", st)
	}
	if n := countFiles(t, f.trashDir()); n != 0 {
		t.Errorf("%d files in trash after the grace", n)
	}
}

// Of two trashed files, the one trashed longer ago than the grace goes and
// the other stays.
func TestGCTrashGrace(t *testing.T) {
	f, vs := gcTier(t, 2, 10)
	now := time.Now()
	setTimes(t, f, vs[0], now.Add(-time.Hour), now.Add(-time.Hour))
	runGC(t, f, fileSize(t, f, vs[1]), now) // trashes vs[0]
	runGC(t, f, 0, now.Add(10*time.Minute)) // trashes vs[1]
	st := runGC(t, f, 0, now.Add(gcGrace+time.Minute))
	if st.TrashDeleted != 1 || st.TrashKept != 1 {
		t.Fatalf("stats %+v, want one trashed file deleted and one kept", st)
	}
	des, err := os.ReadDir(f.trashDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(des) != 1 || des[0].Name()[:64] != Name(vs[1]) {
		t.Errorf("trash holds %v, want only the entry of %s", des, vs[1].Key)
	}
}

// Temporary files not written to for the grace (a publisher killed midway)
// are deleted; fresh ones (a publish under way) are kept.
func TestGCStaleTmp(t *testing.T) {
	f, _ := gcTier(t, 0, 0)
	now := time.Now()
	tmp := filepath.Join(f.root, "tmp")
	for name, age := range map[string]time.Duration{"stale": gcGrace + time.Minute, "fresh": time.Minute} {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, make([]byte, 100), 0o664); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	st := runGC(t, f, 1<<40, now)
	if st.TmpDeleted != 1 || st.TmpDeletedBytes != 100 {
		t.Errorf("stats %+v, want one temporary file of 100 bytes deleted", st)
	}
	if _, err := os.Stat(filepath.Join(tmp, "stale")); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("stale temporary file: %v, want deleted", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "fresh")); err != nil {
		t.Errorf("fresh temporary file: %v, want kept", err)
	}
}

// Touch marks an entry used (its access time) without changing its
// modification time, so GC keeps it over one used more recently before.
// Touch of an entry that is not there is not an error.
func TestTouchChangesOrder(t *testing.T) {
	f, vs := gcTier(t, 2, 10)
	now := time.Now()
	old := now.Add(-2 * time.Hour).Truncate(time.Second)
	setTimes(t, f, vs[0], old, old)
	setTimes(t, f, vs[1], now.Add(-time.Hour), old)
	if err := f.Touch(context.Background(), vs[0]); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(f.entryPath(Name(vs[0])))
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(old) {
		t.Errorf("Touch changed the modification time to %v", fi.ModTime())
	}
	runGC(t, f, fileSize(t, f, vs[0]), now)
	if got := present(f, vs); !got[0] || got[1] {
		t.Errorf("entries left %v: want the touched one kept and the other removed", got)
	}
	if err := f.Touch(context.Background(), Version{Bucket: "b", Key: "missing", ETag: "x", Size: 1}); err != nil {
		t.Errorf("Touch of a missing entry: %v", err)
	}
}

// An entry used after GC's walk saw it is kept even if it was the least
// recently used: trashEntry checks again.
func TestGCKeepsEntryUsedSinceWalk(t *testing.T) {
	f, vs := gcTier(t, 1, 10)
	old := time.Now().Add(-time.Hour)
	setTimes(t, f, vs[0], old, old)
	entries, err := f.walkEntries(context.Background())
	if err != nil || len(entries) != 1 {
		t.Fatalf("walk: %v, %d entries", err, len(entries))
	}
	if err := f.Touch(context.Background(), vs[0]); err != nil {
		t.Fatal(err)
	}
	moved, err := f.trashEntry(entries[0], time.Now())
	if err != nil || moved {
		t.Errorf("trashEntry of an entry used since the walk: moved %v, %v; want kept", moved, err)
	}
	if !present(f, vs)[0] {
		t.Error("the entry is gone")
	}
}

// GC works on a tier made before trash/ existed, and FindFolder finds a
// tier by its folder or the one holding it, but makes none.
func TestFindFolder(t *testing.T) {
	dir := t.TempDir()
	if _, err := FindFolder(dir); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("FindFolder of an empty folder: %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Join(dir, folderLayout)); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("FindFolder made the tier: %v", err)
	}
	f, vs := gcTier(t, 1, 10)
	if err := os.Remove(f.trashDir()); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Dir(f.root), f.root} {
		g, err := FindFolder(d)
		if err != nil {
			t.Fatalf("FindFolder(%s): %v", d, err)
		}
		if g.root != f.root {
			t.Errorf("FindFolder(%s) found %s, want %s", d, g.root, f.root)
		}
	}
	if st := runGC(t, f, 0, time.Now()); st.Removed != 1 || present(f, vs)[0] {
		t.Errorf("GC without trash/: %+v", st)
	}
}

// A grace of 0 deletes the entries GC removes at once, with the trash and
// temporary files, even when the filesystem's clock is ahead of now.
func TestGCGraceZero(t *testing.T) {
	f, vs := gcTier(t, 2, 10)
	if err := os.WriteFile(filepath.Join(f.root, "tmp", "x"), []byte("x"), 0o664); err != nil {
		t.Fatal(err)
	}
	st, err := f.GC(context.Background(), 0, 0, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed != 2 || st.TrashDeleted != 2 || st.TrashKept != 0 || st.TmpDeleted != 1 {
		t.Errorf("stats %+v, want both entries removed and deleted, and the temporary file", st)
	}
	if n := countFiles(t, f.trashDir()); n != 0 {
		t.Errorf("%d files in trash", n)
	}
	if p := present(f, vs); p[0] || p[1] {
		t.Errorf("entries left %v", p)
	}
}

// A copy out of the tier through Shared counts as a use: gc then takes
// the entry copied last.
func TestSharedFillTouches(t *testing.T) {
	f, err := OpenFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewShared(f, "bucket")
	var objs []index.Object
	for i := range 2 {
		data := cachetest.RandBytes(uint64(60+i), mib)
		v := testVersion(data)
		v.Bucket, v.Key = "bucket", fmt.Sprintf("k%d", i)
		if err := f.Publish(context.Background(), v, bytes.NewReader(data), mib, blockSums(data, mib), nil); err != nil {
			t.Fatal(err)
		}
		// k0 older than k1; each read since its change (atime past
		// mtime), so that relatime does not stamp a read.
		old := time.Now().Add(-time.Duration(2-i) * time.Hour)
		os.Chtimes(f.entryPath(Name(v)), old.Add(time.Minute), old)
		objs = append(objs, index.Object{Key: v.Key, ETag: v.ETag, Size: v.Size})
	}
	if err := s.Fill(context.Background(), objs[0], discardAt{}, mib); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(f.entryPath(Name(s.version(objs[0]))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.GC(context.Background(), fi.Size(), time.Hour, time.Now()); err != nil { // room for one
		t.Fatal(err)
	}
	if _, err := f.Open(context.Background(), s.version(objs[0])); err != nil {
		t.Errorf("the entry copied last was removed: %v", err)
	}
	if _, err := f.Open(context.Background(), s.version(objs[1])); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("the entry not used since was kept: %v", err)
	}
}

// discardAt is an io.WriterAt that keeps nothing.
type discardAt struct{}

func (discardAt) WriteAt(b []byte, off int64) (int, error) { return len(b), nil }
