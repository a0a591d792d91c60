package test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bigFolder holds more keys than one ListObjectsV2 page (1000), so that
// listing it exercises pagination.
const (
	bigFolder     = "meta/windows"
	bigFolderKeys = 3000
)

// TestTreeEqualsListing checks that the tree under the mountpoint is the S3
// prefix: the same files and folders, sizes and mtimes, with a folder that
// takes several listing pages, and nothing from outside the prefix.
func TestTreeEqualsListing(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	objs := map[string][]byte{}
	for i := range bigFolderKeys {
		// Sizes 0..99: includes empty objects.
		objs[fmt.Sprintf("%s/%s/w-%05d.json", prefix, bigFolder, i)] = []byte(strings.Repeat("x", i%100))
	}
	objs[prefix+"/meta/summary.txt"] = []byte("windows: 3000\n")
	// Keys that share the prefix's characters but not its folder must not
	// show up.
	objs[prefix+"-old/train/stale.npz"] = []byte("stale")
	objs["cache/other.txt"] = []byte("other")
	objs["top.txt"] = []byte("top")
	e.srv.PutMany(t, bucket, objs)

	m := e.mount(t)
	e.proxy.Reset()
	got := walkMount(t, m.dir)
	want := e.listPrefix(t)

	if n := countIn(got, bigFolder); n != bigFolderKeys {
		t.Errorf("%s shows %d entries, want %d (all listing pages)", bigFolder, n, bigFolderKeys)
	}
	for name, w := range want {
		g, ok := got[name]
		switch {
		case !ok:
			t.Errorf("%s is in S3 but missing from the mount", name)
		case g.dir != w.dir:
			t.Errorf("%s: directory %v in the mount, %v in S3", name, g.dir, w.dir)
		case !w.dir && g.size != w.size:
			t.Errorf("%s: size %d in the mount, %d in S3", name, g.size, w.size)
		case !w.dir && absDuration(g.mtime.Sub(w.mtime)) > time.Second:
			t.Errorf("%s: mtime %v in the mount, LastModified %v in S3", name, g.mtime, w.mtime)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s is in the mount but not in S3 under %s/", name, prefix)
		}
	}
	// Sizes and mtimes come from the listings: no object is fetched or
	// HEADed to show the tree.
	if c := e.proxy.Counts(); c.GetObject != 0 || c.Head != 0 {
		t.Errorf("walking the tree made %d GETs and %d HEADs, want none", c.GetObject, c.Head)
	}
}

func countIn(tree map[string]entry, dir string) int {
	n := 0
	for name := range tree {
		if filepath.Dir(name) == dir {
			n++
		}
	}
	return n
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// TestMetadataFromFreshListing checks that `ls -l` and stat inside a
// folder whose listing is fresh make no S3 request, and that a name absent
// from it is ENOENT without asking S3.
func TestMetadataFromFreshListing(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	m := e.mount(t)

	e.proxy.Reset()
	out := ls(t, filepath.Join(m.dir, "train")) + ls(t, filepath.Join(m.dir, "dev"))
	for _, name := range append(npzNames(files, "train"), npzNames(files, "dev")...) {
		line := lineWith(out, filepath.Base(name))
		if line == "" {
			t.Errorf("ls -l does not show %s:\n%s", name, out)
			continue
		}
		if size := strconv.Itoa(len(files[name])); !strings.Contains(" "+line+" ", " "+size+" ") {
			t.Errorf("ls -l shows %q, want size %s", line, size)
		}
		if !strings.HasPrefix(line, "-r--r--r--") {
			t.Errorf("ls -l shows %q, want mode -r--r--r-- (the default --file-mode 0444)", line)
		}
	}
	if c := e.proxy.Counts(); c.GetObject != 0 || c.Head != 0 || c.List == 0 {
		t.Errorf("the first ls -l of train and dev made %+v: want listings only (no GET, no HEAD)", c)
	}

	// Make the kernel forget names and attributes, so that every lookup
	// below reaches the daemon, which must answer from its index.
	dropKernelCaches(t)
	e.proxy.Reset()
	for name, data := range files {
		info, err := os.Stat(filepath.Join(m.dir, name))
		if err != nil {
			t.Errorf("stat %s: %v", name, err)
		} else if info.Size() != int64(len(data)) {
			t.Errorf("stat %s: size %d, want %d", name, info.Size(), len(data))
		}
	}
	ls(t, filepath.Join(m.dir, "train"))
	ls(t, filepath.Join(m.dir, "dev"))
	e.wantNoRequests(t, "stat and ls -l within fresh listings")

	e.proxy.Reset()
	for _, missing := range []string{"train/no-such-file.npz", "dev/NO.npz", "no-such-folder", "train/no-such-folder/x.npz"} {
		_, err := os.Stat(filepath.Join(m.dir, missing))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat %s: got %v, want ENOENT", missing, err)
		}
	}
	e.wantNoRequests(t, "looking up names missing from fresh listings")
}

// ls runs `ls -l dir` and returns its output.
func ls(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command("ls", "-l", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("ls -l %s: %v\n%s", dir, err, out)
	}
	return string(out)
}

// lineWith returns the first line of out that ends with name.
func lineWith(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasSuffix(line, " "+name) {
			return line
		}
	}
	return ""
}

// dropKernelCaches makes the kernel drop its page cache, dentries and
// inodes, so that the next lookups and reads reach the daemon instead of
// being answered by the kernel. Where /proc/sys is read-only (some
// containers) it reports false and the test goes on, checking less.
func dropKernelCaches(t *testing.T) bool {
	t.Helper()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		t.Logf("cannot drop kernel caches (%v): later reads may be served by the kernel", err)
		return false
	}
	return true
}
