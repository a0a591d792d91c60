package test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The legacy fixture is a cache dir made by the release before the index
// schema 2 (commit 9888e9a, schema 1: one value per folder listing, pins per
// object): testdata/legacy-schema1.tar.gz. It was made with
//
//	S3CACHEFS_MAKE_LEGACY=$PWD/testdata/legacy-schema1.tar.gz \
//	    go test -run TestMakeLegacyFixture ./test
//
// run on that commit. Its daemon saw the objects below, uploaded with the
// AWS CLI into s3://demo-bucket/legacy/: one.bin read whole, three.bin read
// only in its last 4 KiB (so its last block is cached), c/ prefetched (a job that ended done, pinning
// four.bin), every folder listed, five.bin never read.
const legacyPrefix = "legacy"

var legacyObjects = []struct {
	key  string // under legacyPrefix
	size int
}{
	{"a/one.bin", 300_000},
	{"b/three.bin", 3_000_000},
	{"c/four.bin", 200_000},
	{"d/five.bin", 50_000},
}

// legacyBytes is the content of key: text lines that name the key and the
// offset, so every range of every object differs, and the fixture gzips
// small.
func legacyBytes(key string, size int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "%s line %08d\n", key, i)
	}
	return b.Bytes()[:size]
}

// uploadLegacy puts the fixture's objects into S3 with the AWS CLI, as
// they were when the fixture was made (so their ETags match its records).
func (e *env) uploadLegacy(t *testing.T) {
	t.Helper()
	src := t.TempDir()
	for _, o := range legacyObjects {
		p := filepath.Join(src, o.key)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, legacyBytes(o.key, o.size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.awsCLI(t, "s3", "sync", "--no-progress", src, "s3://"+bucket+"/"+legacyPrefix+"/")
}

// mountLegacy mounts s3://bucket/legacy with cache dir cache, listings
// kept indefinitely and one block per GET, as the fixture was made.
func (e *env) mountLegacy(t *testing.T, cache string) *mounted {
	t.Helper()
	dir := newMountpoint(t)
	r := e.run(t, "mount", "s3://"+bucket+"/"+legacyPrefix, dir, "--cache-dir", cache,
		"--endpoint-url", e.proxy.Endpoint, "--force-path-style", "--metadata-ttl", "indefinite",
		"--part-size", "1MiB", "--read-ahead", "0")
	if r.code != 0 {
		t.Fatalf("mount failed: %s\ndaemon log:\n%s", r, logTail(cache))
	}
	m := &mounted{dir: dir, cache: cache}
	t.Cleanup(func() { e.cleanup(t, m) })
	m.pid = e.status(t, m).PID
	return m
}

// TestLegacyCacheDirUpgraded mounts a cache dir made by the schema 1
// release: the first mount upgrades its index, and everything that release
// cached is served again without asking S3: listings, whole files, the one
// block of a partial file, and the finished job's pin.
func TestLegacyCacheDirUpgraded(t *testing.T) {
	e := newEnv(t)
	e.uploadLegacy(t)
	cache := t.TempDir()
	untarGz(t, filepath.Join("testdata", "legacy-schema1.tar.gz"), cache)

	m := e.mountLegacy(t, cache)
	e.proxy.Reset() // the mount itself checks the bucket with one LIST
	if log := readLog(cache); !strings.Contains(log, "upgraded index") || !strings.Contains(log, "from=1") {
		t.Errorf("the daemon log does not say the index was upgraded from schema 1:\n%s", logTail(cache))
	}

	// Every folder was listed by the old release: walking the tree and
	// reading the whole files asks S3 nothing.
	var names []string
	err := filepath.WalkDir(m.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(m.dir, p)
			names = append(names, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(names, ","), "a/one.bin,b/three.bin,c/four.bin,d/five.bin"; got != want {
		t.Errorf("files in the upgraded mount: %s, want %s", got, want)
	}
	for _, key := range []string{"a/one.bin", "c/four.bin"} {
		readLegacy(t, m, key)
	}
	e.wantNoRequests(t, "walking the upgraded tree and reading its whole cached files")

	// The partial file fetches only the blocks the old release lacked:
	// its last block (from 2 MiB) is served from the cache.
	readLegacy(t, m, "b/three.bin")
	readLegacy(t, m, "d/five.bin")
	c := e.proxy.Counts()
	if want := int64(2<<20 + 50_000); c.GetBytes != want || c.List != 0 || c.Head != 0 {
		t.Errorf("reading the partial and the unread file: %+v, want %d GET bytes and no LIST or HEAD", c, want)
	}

	st := e.status(t, m)
	if st.Objects != 4 || st.CompleteObjects != 4 {
		t.Errorf("status after reading everything: %d objects, %d complete; want 4 and 4", st.Objects, st.CompleteObjects)
	}
	if st.PinnedObjects != 1 {
		t.Errorf("status: %d pinned objects, want 1 (four.bin, by the old release's job)", st.PinnedObjects)
	}
	if r := e.run(t, "verify", "--mount", m.dir, "--deep"); r.code != 0 {
		t.Errorf("verify --deep of the upgraded cache: %s", r)
	}
	e.drop(t, m)

	// The upgraded cache dir mounts again as it is (no second upgrade).
	m = e.mountLegacy(t, cache)
	e.proxy.Reset()
	readLegacy(t, m, "b/three.bin")
	e.wantNoRequests(t, "a second mount of the upgraded cache dir")
	if n := strings.Count(readLog(cache), "upgraded index"); n != 1 {
		t.Errorf("the log says %d times that the index was upgraded, want once", n)
	}
	e.drop(t, m)
}

// readLegacy reads key through m and compares it with what was uploaded.
func readLegacy(t *testing.T, m *mounted, key string) {
	t.Helper()
	for _, o := range legacyObjects {
		if o.key != key {
			continue
		}
		got, err := os.ReadFile(filepath.Join(m.dir, key))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, legacyBytes(o.key, o.size)) {
			t.Errorf("%s: the mount's bytes differ from the object's", key)
		}
		return
	}
	t.Fatalf("%s is not a legacy object", key)
}

// TestMakeLegacyFixture writes the legacy fixture with this tree's binary
// when S3CACHEFS_MAKE_LEGACY names the archive to write; see legacyPrefix.
func TestMakeLegacyFixture(t *testing.T) {
	out := os.Getenv("S3CACHEFS_MAKE_LEGACY")
	if out == "" {
		t.Skip("S3CACHEFS_MAKE_LEGACY is not set: the fixture is made by hand on the release it stands for")
	}
	e := newEnv(t)
	e.uploadLegacy(t)
	cache := t.TempDir()
	m := e.mountLegacy(t, cache)
	if _, err := os.ReadFile(filepath.Join(m.dir, "a/one.bin")); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(m.dir, "b/three.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(make([]byte, 4096), 3_000_000-4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	job := e.startJob(t, m, "c")
	waitFor(t, cmdTimeout, "the prefetch of c to end", func() bool { return e.jobState(t, m, job.ID) == "done" })
	if _, err := os.ReadDir(filepath.Join(m.dir, "d")); err != nil {
		t.Fatal(err)
	}
	e.drop(t, m)
	writeTarGz(t, cache, out)
}

// writeTarGz archives the regular files and folders under dir, except the
// daemon log, into out.
func writeTarGz(t *testing.T, dir, out string) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == dir || d.Name() == "s3cachefs.log" {
			return err
		}
		info, err := d.Info()
		if err != nil || !(info.Mode().IsRegular() || info.IsDir()) {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name, _ = filepath.Rel(dir, p)
		if err := tw.WriteHeader(h); err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil {
			_, err = tw.Write(b)
		}
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = os.WriteFile(out, buf.Bytes(), 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// untarGz extracts archive into dir (folders and regular files only,
// names kept inside dir).
func untarGz(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("%s: entry %q leaves the folder", archive, h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, os.FileMode(h.Mode)&0o777)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, os.FileMode(h.Mode)&0o777)
			}
		default:
			t.Fatalf("%s: entry %q is neither a file nor a folder", archive, h.Name)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
