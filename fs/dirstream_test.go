package fs

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"s3cachefs/index"
)

// bigFolder is a fixture with n files big/f0000.. in one folder: more
// than one page of a dirStream.
func bigFolder(n int) *fixture {
	sizes := map[string]int{}
	for i := range n {
		sizes[fmt.Sprintf("big/f%04d", i)] = 1
	}
	return newFixture(sizes)
}

func opendir(t *testing.T, d *fs.Inode) (*dirStream, uint32) {
	t.Helper()
	fh, flags, errno := d.Operations().(fs.NodeOpendirHandler).OpendirHandle(context.Background(), 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	return fh.(*dirStream), flags
}

// readN reads up to n names through Readdirent (n < 0: all).
func readN(t *testing.T, s *dirStream, n int) []string {
	t.Helper()
	var out []string
	for n < 0 || len(out) < n {
		e, errno := s.Readdirent(context.Background())
		if errno != 0 {
			t.Fatal(errno)
		}
		if e == nil {
			break
		}
		out = append(out, e.Name)
	}
	return out
}

const cacheFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE

// A listing that changes mid-readdir: names that did not change come out
// exactly once, and the next open does not let the kernel keep the mix.
func TestDirStreamRelistBetweenPages(t *testing.T) {
	const n = 2*dirPage + 100
	fx := bigFolder(n)
	root := newNodeRoot(t, fx)
	d, _ := mustLookup(t, root, "big")

	s, flags := opendir(t, d)
	if flags&cacheFlags != cacheFlags {
		t.Errorf("first open flags %#x, want the kernel allowed to cache", flags)
	}
	got := readN(t, s, dirPage+10)
	fx.tree.remove("big/f0005") // already read
	fx.tree.remove("big/f1500") // not yet handed out, maybe read already
	fx.tree.remove("big/f2100") // in a page not read yet
	fx.tree.put("big/f2100x", index.Object{Key: "prefix/big/f2100x", Size: 1, ETag: "y"})
	got = append(got, readN(t, s, -1)...)

	seen := map[string]int{}
	for _, name := range got {
		seen[name]++
	}
	for i := range n {
		name := fmt.Sprintf("f%04d", i)
		if name == "f1500" || name == "f0005" || name == "f2100" {
			continue // changed: either view is allowed
		}
		if seen[name] != 1 {
			t.Errorf("unchanged %s read %d times", name, seen[name])
		}
	}
	if seen["f2100"] != 0 || seen["f2100x"] != 1 || seen["f1500"] > 1 || seen["f1500x"] > 1 {
		t.Errorf("changed names read: f2100 %d times, f2100x %d, f1500 %d, f1500x %d; want 0, 1, at most 1, at most 1",
			seen["f2100"], seen["f2100x"], seen["f1500"], seen["f1500x"])
	}
	if !slices.IsSorted(got) {
		t.Error("names not in order")
	}

	if _, flags := opendir(t, d); flags&cacheFlags != 0 {
		t.Errorf("open after a mixed read: flags %#x, want no caching", flags)
	}
	s, flags = opendir(t, d)
	if flags&cacheFlags != cacheFlags {
		t.Errorf("open of an unchanged listing: flags %#x, want caching allowed", flags)
	}
	if all := readN(t, s, -1); len(all) != n-2 { // 3 removed, 1 added
		t.Errorf("whole read: %d names, want %d", len(all), n-2)
	}
	fx.tree.put("big/zzz", index.Object{Key: "prefix/big/zzz", Size: 1, ETag: "z"})
	if _, flags := opendir(t, d); flags&cacheFlags != 0 {
		t.Errorf("open after the listing changed: flags %#x, want no caching", flags)
	}
}

// Seekdir to 0 restarts; to an earlier offset resumes after that entry.
func TestDirStreamSeekdir(t *testing.T) {
	const n = dirPage + 50
	fx := bigFolder(n)
	root := newNodeRoot(t, fx)
	d, _ := mustLookup(t, root, "big")
	s, _ := opendir(t, d)
	first := readN(t, s, dirPage+20)
	if errno := s.Seekdir(context.Background(), 0); errno != 0 {
		t.Fatal(errno)
	}
	if again := readN(t, s, 3); !slices.Equal(again, first[:3]) {
		t.Errorf("after Seekdir(0): %v, want %v", again, first[:3])
	}
	if errno := s.Seekdir(context.Background(), dirPage+5); errno != 0 {
		t.Fatal(errno)
	}
	if next := readN(t, s, 1); len(next) != 1 || next[0] != first[dirPage+5] {
		t.Errorf("after Seekdir(%d): %v, want %s", dirPage+5, next, first[dirPage+5])
	}
	if errno := s.Seekdir(context.Background(), 10*n); errno != 0 {
		t.Fatal(errno)
	}
	if rest := readN(t, s, -1); len(rest) != 0 {
		t.Errorf("after a seek past the end: %v", rest)
	}
	if _, errno := s.Readdirent(context.Background()); errno != syscall.Errno(0) {
		t.Errorf("Readdirent at the end: %v", errno)
	}
}

// A stream that reads on across a re-list after another open already saw
// the new listing still keeps the open after both from trusting the
// kernel's copy.
func TestDirStreamMixedAfterLaterOpen(t *testing.T) {
	fx := bigFolder(2 * dirPage)
	root := newNodeRoot(t, fx)
	d, _ := mustLookup(t, root, "big")
	a, _ := opendir(t, d)
	readN(t, a, 10)
	fx.tree.remove("big/f1500")
	if _, flags := opendir(t, d); flags&cacheFlags != 0 {
		t.Fatalf("open after the listing changed: flags %#x, want no caching", flags)
	}
	readN(t, a, -1) // the rest, from the new listing
	if _, flags := opendir(t, d); flags&cacheFlags != 0 {
		t.Errorf("open after a mixed read: flags %#x, want no caching", flags)
	}
}

// READDIRPLUS's per-entry lookup is answered from the entry just read,
// without asking the Tree; other names still go to the Tree.
func TestDirStreamLookupUsesEntry(t *testing.T) {
	fx := bigFolder(3)
	root := newNodeRoot(t, fx)
	d, _ := mustLookup(t, root, "big")
	s, _ := opendir(t, d)
	e, errno := s.Readdirent(context.Background())
	if errno != 0 || e == nil {
		t.Fatalf("Readdirent = %v, %v", e, errno)
	}
	fx.tree.mu.Lock()
	before := fx.tree.lookups
	fx.tree.mu.Unlock()
	var out fuse.EntryOut
	ch, errno := s.Lookup(context.Background(), e.Name, &out)
	if errno != 0 || ch == nil || out.Attr.Size != uint64(fx.objs["big/"+e.Name].Size) || ch.StableAttr().Ino != inoOf("big/"+e.Name) {
		t.Fatalf("Lookup(%s) = %v, %v, attr %+v", e.Name, ch, errno, out.Attr)
	}
	fx.tree.mu.Lock()
	after := fx.tree.lookups
	fx.tree.mu.Unlock()
	if after != before {
		t.Errorf("Lookup of the entry just read asked the Tree %d times, want 0", after-before)
	}
	if _, errno := s.Lookup(context.Background(), "f0002", &out); errno != 0 {
		t.Errorf("Lookup of another name: %v", errno)
	}
	fx.tree.mu.Lock()
	defer fx.tree.mu.Unlock()
	if fx.tree.lookups != after+1 {
		t.Errorf("Lookup of another name asked the Tree %d times, want 1", fx.tree.lookups-after)
	}
}
