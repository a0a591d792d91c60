package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"s3cachefs/blockcache"
	"s3cachefs/cmd/s3cachefs/api"
)

func (e *env) verify(t *testing.T, m *mounted, args ...string) ([]api.FolderReport, result) {
	t.Helper()
	r := e.run(t, append([]string{"verify", "--mount", m.dir, "--json"}, args...)...)
	var out []api.FolderReport
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, r)
	}
	return out, r
}

// TestVerifyEvict covers the user's hand-made checks: verify counts per
// split, --complete, --deep on a damaged cache file, evict and unpin.
func TestVerifyEvict(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	m := e.mount(t)
	nTrain, _ := splitBytes(files, "train")
	nDev, _ := splitBytes(files, "dev")

	rs, r := e.verify(t, m, "train", "dev")
	if r.code != 0 || len(rs) != 2 || rs[0].InS3 != nTrain || rs[0].Missing != nTrain || rs[1].InS3 != nDev {
		t.Fatalf("verify of a cold cache: %+v\n%s", rs, r)
	}
	if _, r := e.verify(t, m, "--complete", "train"); r.code != 1 || !strings.Contains(r.stderr, "not cached") {
		t.Fatalf("verify --complete of a cold cache: %s", r)
	}
	e.prefetchJSON(t, m, "train")
	rs, r = e.verify(t, m, "--complete", "--deep", "train")
	if r.code != 0 || rs[0].Cached != nTrain || rs[0].Checked != nTrain {
		t.Fatalf("verify --complete --deep after prefetch: %+v\n%s", rs, r)
	}
	if r := e.run(t, "verify", "--mount", m.dir, "train"); r.code != 0 || !strings.Contains(r.stdout, "OK") {
		t.Fatalf("plain verify: %s", r)
	}

	// Damage one cached file on disk: --deep names it, and the mount still
	// serves S3's bytes.
	name := npzNames(files, "train")[0]
	damageCacheFiles(t, m.cache, 10)
	rs, r = e.verify(t, m, "--deep", "train")
	if r.code != 1 || int64(len(rs[0].Corrupt)) != nTrain {
		t.Fatalf("verify --deep of damaged files: %+v\n%s", rs, r)
	}
	dropKernelCaches(t)
	got, err := os.ReadFile(filepath.Join(m.dir, name))
	if err != nil || string(got) != string(files[name]) {
		t.Fatalf("read after damage was found: wrong bytes (err %v)", err)
	}

	// evict and unpin.
	e.prefetchJSON(t, m, "dev")
	if r := e.run(t, "prefetch", "--mount", m.dir, "--unpin", "dev"); r.code != 0 || !strings.Contains(r.stdout, "unpinned") {
		t.Fatalf("prefetch --unpin: %s", r)
	}
	e.waitNoOpenFiles(t, m)
	if r := e.run(t, "evict", "--mount", m.dir, "dev"); r.code != 0 || !strings.Contains(r.stdout, "evicted") {
		t.Fatalf("evict: %s", r)
	}
	if rs, _ := e.verify(t, m, "dev"); rs[0].Missing != nDev {
		t.Fatalf("verify after evict: %+v", rs)
	}
}

// TestDamagedBlockOnRead damages cached files on disk while unmounted and
// checks that a remount serves S3's bytes, not the damage, counting it.
func TestDamagedBlockOnRead(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	m := e.mount(t)
	e.prefetchJSON(t, m, "dev")
	e.drop(t, m)
	damageCacheFiles(t, m.cache, 4096)
	m2 := e.mountAt(t, newMountpoint(t), m.cache)
	e.proxy.Reset()
	dev := map[string][]byte{}
	for _, name := range npzNames(files, "dev") {
		dev[name] = files[name]
	}
	readAll(t, m2.dir, dev)
	s := e.status(t, m2)
	if s.CorruptBlocks < int64(len(dev)) || e.proxy.Counts().GetObject == 0 {
		t.Fatalf("damaged blocks found: %d (want %d), GETs to refetch them: %d",
			s.CorruptBlocks, len(dev), e.proxy.Counts().GetObject)
	}
}

// damageCacheFiles overwrites a few bytes at off in every cache file under
// cacheDir, as a failing SSD might.
func damageCacheFiles(t *testing.T, cacheDir string, off int64) {
	t.Helper()
	objects, _ := filepath.Glob(filepath.Join(blockcache.FilesDir(cacheDir), "*", "*"))
	if len(objects) == 0 {
		t.Fatal("no cache files")
	}
	for _, p := range objects {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteAt([]byte("bit rot"), off)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
}
