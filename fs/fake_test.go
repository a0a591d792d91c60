package fs

import (
	"context"
	"fmt"
	"io"
	iofs "io/fs"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"s3cachefs/blockcache"
	"s3cachefs/index"
)

// The real implementations fit the interfaces the fakes stand in for.
var _ File = (*blockcache.Handle)(nil)

// fakeTree is a Tree over folders held in memory.
type fakeTree struct {
	mu          sync.Mutex
	dirs        map[string][]index.Entry // folder path → entries sorted by name
	gens        map[string]uint64        // folder path → generation, bumped by every change
	failDir     map[string]error         // folder path → error its reads return
	invalidated []string                 // folders passed to Invalidate, in order
	lookups     int                      // Lookup calls
}

func newFakeTree() *fakeTree {
	return &fakeTree{dirs: map[string][]index.Entry{"": nil}, gens: map[string]uint64{}, failDir: map[string]error{}}
}

// put adds or replaces the file at path (creating its folders) with obj.
func (t *fakeTree) put(path string, obj index.Object) {
	t.mu.Lock()
	defer t.mu.Unlock()
	parts := strings.Split(path, "/")
	dir := ""
	for _, p := range parts[:len(parts)-1] {
		t.setLocked(dir, index.Entry{Name: p, IsDir: true})
		dir = join(dir, p)
		if _, ok := t.dirs[dir]; !ok {
			t.dirs[dir] = nil
		}
	}
	t.setLocked(dir, index.Entry{Name: parts[len(parts)-1], Object: obj})
}

func (t *fakeTree) setLocked(dir string, e index.Entry) {
	es := t.dirs[dir]
	i, found := slices.BinarySearchFunc(es, e.Name, func(a index.Entry, n string) int { return strings.Compare(a.Name, n) })
	if found {
		es[i] = e
	} else {
		es = slices.Insert(es, i, e)
	}
	t.dirs[dir] = es
	t.gens[dir]++
}

// remove deletes the entry at path.
func (t *fakeTree) remove(path string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	dir, name := "", path
	if i := strings.LastIndex(path, "/"); i >= 0 {
		dir, name = path[:i], path[i+1:]
	}
	t.dirs[dir] = slices.DeleteFunc(t.dirs[dir], func(e index.Entry) bool { return e.Name == name })
	t.gens[dir]++
}

func (t *fakeTree) Generation(ctx context.Context, dir string) (uint64, error) {
	if _, err := t.ReadDir(ctx, dir); err != nil {
		return 0, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.gens[dir] + 1, nil
}

func (t *fakeTree) ReadDirPage(ctx context.Context, dir, after string, n int) ([]index.Entry, uint64, error) {
	es, err := t.ReadDir(ctx, dir)
	if err != nil {
		return nil, 0, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	i, found := slices.BinarySearchFunc(es, after, func(a index.Entry, n string) int { return strings.Compare(a.Name, n) })
	if found {
		i++
	}
	es = es[i:]
	return es[:min(n, len(es))], t.gens[dir] + 1, nil
}

func (t *fakeTree) ReadDir(ctx context.Context, dir string) ([]index.Entry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.failDir[dir]; err != nil {
		return nil, err
	}
	es, ok := t.dirs[dir]
	if !ok {
		return nil, fmt.Errorf("readdir %q: %w", dir, iofs.ErrNotExist)
	}
	return slices.Clone(es), nil
}

func (t *fakeTree) Lookup(ctx context.Context, dir, name string) (index.Entry, error) {
	t.mu.Lock()
	t.lookups++
	t.mu.Unlock()
	es, err := t.ReadDir(ctx, dir)
	if err != nil {
		return index.Entry{}, err
	}
	for _, e := range es {
		if e.Name == name {
			return e, nil
		}
	}
	return index.Entry{}, fmt.Errorf("lookup %q in %q: %w", name, dir, iofs.ErrNotExist)
}

func (t *fakeTree) Invalidate(dir string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.invalidated = append(t.invalidated, dir)
	return nil
}

func (t *fakeTree) invalidations() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.invalidated)
}

// fakeFiles serves object versions from memory and counts calls.
type fakeFiles struct {
	mu      sync.Mutex
	data    map[string][]byte // key + "@" + version → contents
	fail    map[string]error  // key + "@" + version → error ReadAt returns
	opens   int
	reads   int
	closes  int
	maxRead int           // the largest read asked for
	closed  chan struct{} // one send per Close, so tests can wait for RELEASE
}

func newFakeFiles() *fakeFiles {
	return &fakeFiles{data: map[string][]byte{}, fail: map[string]error{}, closed: make(chan struct{}, 4096)}
}

func versionKey(obj index.Object) string { return obj.Key + "@" + obj.Version() }

func (f *fakeFiles) put(obj index.Object, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data[versionKey(obj)] = data
}

func (f *fakeFiles) failReads(obj index.Object, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[versionKey(obj)] = err
}

func (f *fakeFiles) counts() (opens, reads, closes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opens, f.reads, f.closes
}

// waitCloses waits until n handles in all have been closed.
func (f *fakeFiles) waitCloses(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		if _, _, closes := f.counts(); closes >= n {
			return
		}
		select {
		case <-f.closed:
		case <-timeout:
			_, _, closes := f.counts()
			t.Fatalf("%d handles closed, want %d", closes, n)
		}
	}
}

func (f *fakeFiles) Open(ctx context.Context, obj index.Object) (File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, ok := f.data[versionKey(obj)]
	if !ok {
		return nil, fmt.Errorf("open %s: %w", versionKey(obj), iofs.ErrNotExist)
	}
	f.opens++
	return &fakeFile{files: f, key: versionKey(obj), data: data}, nil
}

type fakeFile struct {
	files *fakeFiles
	key   string
	data  []byte
}

func (h *fakeFile) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	f := h.files
	f.mu.Lock()
	f.reads++
	f.maxRead = max(f.maxRead, len(p))
	err := f.fail[h.key]
	f.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", h.key, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", h.key, err)
	}
	if off >= int64(len(h.data)) {
		return 0, io.EOF
	}
	n := copy(p, h.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Backing returns nil: the fake keeps its bytes in memory.
func (h *fakeFile) Backing() *os.File { return nil }

func (h *fakeFile) Close() error {
	f := h.files
	f.mu.Lock()
	f.closes++
	f.mu.Unlock()
	select {
	case f.closed <- struct{}{}:
	default: // nobody waits for this many; the count still holds
	}
	return nil
}

// fixture is a small tree of files with known contents.
type fixture struct {
	tree  *fakeTree
	files *fakeFiles
	objs  map[string]index.Object // path → object
	data  map[string][]byte       // path → contents
	// maxNodes is the mount's Options.MaxNodes (0: the default).
	maxNodes int
}

var fixtureEpoch = time.Date(2025, 9, 19, 12, 0, 0, 0, time.UTC)

// newFixture builds a tree of the given file paths; contents are
// deterministic per path, sizes vary (including empty and multi-MiB).
func newFixture(sizes map[string]int) *fixture {
	fx := &fixture{tree: newFakeTree(), files: newFakeFiles(), objs: map[string]index.Object{}, data: map[string][]byte{}}
	i := 0
	for _, p := range slices.Sorted(maps.Keys(sizes)) {
		data := make([]byte, sizes[p])
		for j := range data {
			data[j] = byte(j*31 + i*7 + j>>11)
		}
		obj := index.Object{
			Key: "prefix/" + p, Size: int64(len(data)), ETag: fmt.Sprintf("etag-%d", i),
			LastModified: fixtureEpoch.Add(time.Duration(i) * time.Hour),
		}
		fx.set(p, obj, data)
		i++
	}
	return fx
}

// set makes obj with data the object at path.
func (fx *fixture) set(path string, obj index.Object, data []byte) {
	fx.tree.put(path, obj)
	fx.files.put(obj, data)
	fx.objs[path] = obj
	fx.data[path] = data
}
