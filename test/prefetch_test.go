package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"s3cachefs/cmd/s3cachefs/api"
)

// prefetchJSON runs `prefetch --json PATHS` on m and returns every line.
func (e *env) prefetchJSON(t *testing.T, m *mounted, paths ...string) []api.Job {
	t.Helper()
	r := e.run(t, append([]string{"prefetch", "--mount", m.dir, "--json", "--interval", "50ms"}, paths...)...)
	if r.code != 0 {
		t.Fatalf("prefetch --json %v: %s", paths, r)
	}
	var out []api.Job
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		var p api.Job
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			t.Fatalf("prefetch --json printed a line that is not JSON: %v\n%q", err, sc.Text())
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		t.Fatalf("prefetch --json printed nothing")
	}
	return out
}

// splitBytes sums the sizes of the files under split.
func splitBytes(files map[string][]byte, split string) (n, bytes int64) {
	for name, b := range files {
		if strings.HasPrefix(name, split+"/") {
			n++
			bytes += int64(len(b))
		}
	}
	return n, bytes
}

func TestPrefetch(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	m := e.mount(t)

	// Cold: the job fetches every object of both splits.
	lines := e.prefetchJSON(t, m, "train", "dev")
	last := lines[len(lines)-1]
	if last.State != "done" || len(last.Folders) != 2 {
		t.Fatalf("last progress line: %+v", last)
	}
	for _, f := range last.Folders {
		n, b := splitBytes(files, f.Path)
		if f.Files != n || f.FilesDone != n || f.Bytes != b || f.BytesDone != b || f.CachedAtStart != 0 {
			t.Errorf("folder %s: %+v, want %d files and %d bytes all done", f.Path, f, n, b)
		}
	}
	st := e.status(t, m)
	if st.CompleteObjects != len(files) {
		t.Errorf("status: %d complete objects, want %d", st.CompleteObjects, len(files))
	}

	// Everything is on SSD: reading the whole dataset makes no GET.
	e.proxy.Reset()
	readAll(t, m.dir, files)
	if c := e.proxy.Counts(); c.GetObject != 0 {
		t.Errorf("reading prefetched files made %d GETs", c.GetObject)
	}

	// Again, in the plain form a log file gets: only the listing, and it says so.
	e.proxy.Reset()
	r := e.run(t, "prefetch", "--mount", m.dir, "--interval", "50ms", "train", "dev")
	if r.code != 0 {
		t.Fatalf("second prefetch: %s", r)
	}
	if !strings.Contains(r.stdout, "nothing to fetch") {
		t.Errorf("second prefetch did not say there is nothing to fetch:\n%s", r.stdout)
	}
	line := regexp.MustCompile(`(?m)^(train|dev): (\d+)/(\d+) files, (\d+)/(\d+) bytes, .*/s, ETA \S+$`)
	matches := line.FindAllStringSubmatch(r.stdout, -1)
	if len(matches) < 2 {
		t.Fatalf("no progress lines in the plain output:\n%s", r.stdout)
	}
	for _, mt := range matches[len(matches)-2:] {
		if mt[2] != mt[3] || mt[4] != mt[5] {
			t.Errorf("final progress line not complete: %q", mt[0])
		}
	}
	if c := e.proxy.Counts(); c.GetObject != 0 || c.List == 0 {
		t.Errorf("prefetch of a warm folder: %+v, want lists and no GET", c)
	}

	// An object replaced in S3 is fetched again, and its new bytes served
	// (after a remount, so no kernel cache of the old size is involved).
	name := npzNames(files, "train")[0]
	changed := append(bytes.Clone(files[name]), "-changed"...)
	local := filepath.Join(t.TempDir(), "changed.npz")
	if err := os.WriteFile(local, changed, 0o644); err != nil {
		t.Fatal(err)
	}
	e.awsCLI(t, "s3", "cp", "--no-progress", local, "s3://"+bucket+"/"+prefix+"/"+name)
	e.proxy.Reset()
	e.prefetchJSON(t, m, "train")
	if c := e.proxy.Counts(); c.GetBytes != int64(len(changed)) {
		t.Errorf("after one object changed, prefetch fetched %d bytes, want its %d", c.GetBytes, len(changed))
	}
	e.drop(t, m)
	m2 := e.mountAt(t, newMountpoint(t), m.cache)
	e.proxy.Reset()
	got, err := os.ReadFile(filepath.Join(m2.dir, name))
	if err != nil || !bytes.Equal(got, changed) {
		t.Fatalf("changed object read back wrong (err %v)", err)
	}
	if c := e.proxy.Counts(); c.GetObject != 0 {
		t.Errorf("reading the refetched object made %d GETs", c.GetObject)
	}
}

func TestPrefetchRefusals(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	m := e.mount(t)
	e.proxy.Reset()
	wantRefused(t, e.run(t, "prefetch", "--mount", m.dir, "train", "no-such-split"), 1, "no-such-split does not exist")
	wantRefused(t, e.run(t, "prefetch", "--mount", m.dir), 2, "at least one PATH")
	wantRefused(t, e.run(t, "prefetch", "--mount", m.dir, "/somewhere/else"), 2, "not under the mount")
	if c := e.proxy.Counts(); c.GetObject != 0 {
		t.Errorf("refused prefetches made %d GETs", c.GetObject)
	}
}

// TestPrefetchSurvivesKill kills the daemon with SIGKILL in the middle of a
// prefetch, remounts the same cache dir, and checks that the job resumes
// by itself, completes, serves S3's bytes, and does not fetch again what
// was cached before the kill.
func TestPrefetchSurvivesKill(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	_, trainBytes := splitBytes(files, "train")
	m := e.mount(t, "--prefetch-objects", "1")
	// A slow link, so the kill lands mid-job.
	e.proxy.SetRate(2 << 20)
	r := e.run(t, "prefetch", "--mount", m.dir, "--detach", "train")
	if r.code != 0 {
		t.Fatalf("prefetch --detach: %s", r)
	}
	var before api.Status
	waitFor(t, time.Minute, "some blocks cached", func() bool {
		before = e.status(t, m)
		return before.CachedBytes >= 2<<20
	})
	if before.CachedBytes >= trainBytes {
		t.Fatalf("the job finished before the kill (%d bytes cached); slow the link further", before.CachedBytes)
	}
	if err := syscall.Kill(m.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(m.pid, exitTimeout); err != nil {
		t.Fatal(err)
	}
	// The dead mount is cleaned up by drop.
	if r := e.run(t, "drop", m.dir); r.code != 0 || isMounted(t, m.dir) {
		t.Fatalf("drop of a dead mount: %s", r)
	}
	e.proxy.SetRate(0)
	e.proxy.Reset()
	m2 := e.mountAt(t, newMountpoint(t), m.cache)
	waitFor(t, 2*time.Minute, "the resumed job to finish", func() bool {
		s := e.status(t, m2)
		for _, p := range s.Prefetch {
			if p.State == "failed" || p.State == "cancelled" {
				t.Fatalf("resumed job ended %s: %+v", p.State, p)
			}
		}
		return len(s.Prefetch) == 1 && s.Prefetch[0].State == "done"
	})
	if c := e.proxy.Counts(); c.GetBytes > trainBytes-before.CachedBytes {
		t.Errorf("the resumed job fetched %d bytes, but only %d were missing at the kill",
			c.GetBytes, trainBytes-before.CachedBytes)
	}
	e.proxy.Reset()
	train := map[string][]byte{}
	for name, b := range files {
		if strings.HasPrefix(name, "train/") {
			train[name] = b
		}
	}
	readAll(t, m2.dir, train)
	if c := e.proxy.Counts(); c.GetObject != 0 {
		t.Errorf("reading the resumed split made %d GETs", c.GetObject)
	}
	st := e.status(t, m2)
	if st.CompleteObjects < len(train) {
		t.Errorf("%d complete objects after the resumed job, want %d", st.CompleteObjects, len(train))
	}
}

// TestReadDuringPrefetch reads the file a slow prefetch job reaches last
// and checks it is served, byte for byte, before the job gets to it; then
// cancels the job.
func TestReadDuringPrefetch(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	names := npzNames(files, "train")
	last := names[len(names)-1] // the job goes in listing order
	m := e.mount(t, "--prefetch-objects", "1")
	// The job crawls; the reader of the last file does not.
	e.proxy.SetRate(1 << 20)
	e.proxy.Exempt(last)
	job := e.startJob(t, m, "train")
	got, err := os.ReadFile(filepath.Join(m.dir, last))
	if err != nil || !bytes.Equal(got, files[last]) {
		t.Fatalf("read during prefetch: wrong bytes (err %v)", err)
	}
	// The job cannot have reached the last file yet.
	st := e.status(t, m)
	if len(st.Prefetch) != 1 {
		t.Fatalf("status lists %d jobs, want 1: %+v", len(st.Prefetch), st.Prefetch)
	}
	if p := st.Prefetch[0]; p.State != "running" || p.Folders[0].FilesDone >= int64(len(names))-1 {
		t.Fatalf("the job was not behind the reader: %+v", p)
	}
	r := e.run(t, "prefetch", "--mount", m.dir, "--cancel", job.ID)
	if r.code != 0 {
		t.Fatalf("prefetch --cancel: %s", r)
	}
	r = e.run(t, "status", "--mount", m.dir, "--json")
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Prefetch[0].State != "cancelled" {
		t.Fatalf("after --cancel: %v %+v", err, st.Prefetch)
	}
}

// TestPrefetchSmallFilesShareCommits: a prefetch of 1,200 small files
// records them in shared index transactions (at most 0.1 commits per
// file, from status's index_commits; each file's cache file is still
// synced before it is recorded), and every file reads back as S3 has it
// with no GET.
func TestPrefetchSmallFilesShareCommits(t *testing.T) {
	const n = 1200
	e := newEnv(t)
	rng := mrand.NewChaCha8([32]byte{13})
	files := map[string][]byte{}
	objs := map[string][]byte{}
	for i := range n {
		b := make([]byte, 8<<10+i*53%8192)
		rng.Read(b)
		name := fmt.Sprintf("small/%02d/img_%05d.jpg", i/100, i)
		files[name], objs[prefix+"/"+name] = b, b
	}
	e.srv.PutMany(t, bucket, objs)
	m := e.mount(t)
	before := e.status(t, m)
	lines := e.prefetchJSON(t, m, "small")
	if last := lines[len(lines)-1]; last.State != "done" || last.Folders[0].FilesDone != n {
		t.Fatalf("last progress line: %+v", last)
	}
	st := e.status(t, m)
	commits, syncs := st.IndexCommits-before.IndexCommits, st.CacheSyncs-before.CacheSyncs
	t.Logf("%d files: %d index commits (%.3f per file), %d cache-file syncs", n, commits, float64(commits)/n, syncs)
	if float64(commits)/n > 0.1 {
		t.Errorf("%d index commits for %d files: %.2f per file, want at most 0.1", commits, n, float64(commits)/n)
	}
	if syncs < n {
		t.Errorf("%d cache-file syncs for %d files: each is synced before it is recorded", syncs, n)
	}
	e.proxy.Reset()
	readAll(t, m.dir, files)
	if c := e.proxy.Counts(); c.GetObject != 0 {
		t.Errorf("reading prefetched files made %d GETs", c.GetObject)
	}
}
