package test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// trainerScript reads every NPZ file named on its command line as a data
// loader's workers do: 4 processes, each numpy.load of a file (its end
// first, then every member), and prints one line per file: its name, then
// each array's name, dtype, shape and SHA-256, in the order given.
const trainerScript = `
import hashlib, multiprocessing, os, sys
import numpy as np

def digest(path):
    with np.load(path) as z:
        parts = ["%s %s %s %s" % (k, z[k].dtype, z[k].shape,
                 hashlib.sha256(np.ascontiguousarray(z[k]).tobytes()).hexdigest()) for k in sorted(z.files)]
    return os.path.basename(path) + " " + "; ".join(parts)

if __name__ == "__main__":
    with multiprocessing.Pool(4) as pool:
        for line in pool.map(digest, sys.argv[1:], chunksize=1):
            print(line)
`

// trainerDigests runs trainerScript on the files names under dir.
func trainerDigests(t *testing.T, dir string, names []string) string {
	t.Helper()
	paths := make([]string, len(names))
	for i, n := range names {
		paths[i] = filepath.Join(dir, n)
	}
	out := runPython(t, "numpy readers of "+dir, trainerScript, paths...)
	if got := strings.Count(out, "\n"); got != len(names) {
		t.Fatalf("numpy readers of %s printed %d lines, want %d:\n%s", dir, got, len(names), out)
	}
	return out
}

// TestTrainerReadsWhilePrefetching: four numpy readers go through a split,
// in the opposite order to a prefetch job that is still fetching it, as a
// trainer does right after `prefetch --detach`. Every array they load is
// the source's, the blocks fetched while they had a file open are served
// to them from memory (blocks_fresh), no byte is fetched from S3 twice,
// and the cache holds the source's bytes afterwards.
func TestTrainerReadsWhilePrefetching(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	names := npzNames(files, "train")
	var split int64 // what the job fetches: every file of train/, not only the NPZs
	for n, b := range files {
		if strings.HasPrefix(n, "train/") {
			split += int64(len(b))
		}
	}
	want := trainerDigests(t, suite.dataset, reversed(names))

	m := e.mount(t, "--prefetch-objects", "2")
	// Slow enough that the job is still fetching when the readers open
	// their files, so they wait on its fetches and join them.
	e.proxy.SetRate(2 << 20)
	r := e.run(t, "prefetch", "--mount", m.dir, "--detach", "train")
	if r.code != 0 {
		t.Fatalf("prefetch --detach: %s", r)
	}
	got := trainerDigests(t, m.dir, reversed(names))
	if got != want {
		t.Fatalf("arrays loaded through the mount during the prefetch differ from the source's:\ngot:\n%s\nwant:\n%s", got, want)
	}
	st := e.status(t, m)
	t.Logf("readers during the prefetch: %d blocks served fresh, %d read back and checked; %d opens through the daemon, %d passthrough",
		st.BlocksFresh, st.BlocksChecked, st.DaemonOpens, st.PassthroughOpens)
	if st.BlocksFresh == 0 {
		t.Errorf("no block served fresh to the readers (blocks_checked %d, daemon opens %d): they did not join the prefetch's fetches",
			st.BlocksChecked, st.DaemonOpens)
	}
	// A second job over the same split ends once all of it is cached.
	e.proxy.SetRate(0)
	if r := e.run(t, "prefetch", "--mount", m.dir, "train"); r.code != 0 {
		t.Fatalf("prefetch train, after the readers: %s", r)
	}
	end := e.status(t, m)
	t.Logf("%d index commits and %d cache-file syncs for %d objects", end.IndexCommits, end.CacheSyncs, len(names))
	if end.CacheSyncs < int64(len(names)) || end.IndexCommits < 1 {
		t.Errorf("%d cache-file syncs and %d index commits for %d files fetched: each part is synced and recorded before it is served",
			end.CacheSyncs, end.IndexCommits, len(names))
	}
	if c := e.proxy.Counts(); c.GetBytes > split {
		t.Errorf("%d bytes fetched from S3 for a split of %d: some were fetched twice", c.GetBytes, split)
	}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(m.dir, n))
		if err != nil || !bytes.Equal(b, files[n]) {
			t.Fatalf("%s read back after the prefetch differs from the source (err %v)", n, err)
		}
	}
}

// reversed returns names in the opposite order.
func reversed(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[len(names)-1-i] = n
	}
	return out
}
