package test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const mib = 1 << 20

// TestReads follows one cache dir through its life: cold reads as numpy
// and random access do them, whole-file reads, reads that must come from
// the SSD, and a remount that must fetch nothing. The last two steps count
// on the reads before them having filled the cache, so they run only if
// those passed.
func TestReads(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	m := e.mount(t)
	var total int64
	for _, b := range files {
		total += int64(len(b))
	}

	steps := []struct {
		name      string
		needsFill bool // counts on the earlier steps having filled the cache
		fn        func(t *testing.T)
	}{
		{"numpy loads a cold npz", false, func(t *testing.T) {
			name := npzNames(files, "train")[0]
			want := npzDigest(t, filepath.Join(suite.dataset, name))
			if got := npzDigest(t, filepath.Join(m.dir, name)); got != want {
				t.Errorf("numpy through the mount:\n%s\nnumpy on the source:\n%s", got, want)
			}
		}},
		{"random ranged reads of cold files equal the source", false, func(t *testing.T) {
			for _, name := range npzNames(files, "dev") {
				checkRanges(t, filepath.Join(m.dir, name), files[name])
			}
		}},
		{"whole-file reads equal the source", false, func(t *testing.T) {
			readAll(t, m.dir, files)
			if c := e.proxy.Counts(); c.GetObject == 0 {
				t.Errorf("reading every file cold made no GET: %+v", c)
			}
		}},
		{"a second read makes no GET", true, func(t *testing.T) {
			dropKernelCaches(t)
			e.proxy.Reset()
			readAll(t, m.dir, files)
			checkRanges(t, filepath.Join(m.dir, npzNames(files, "train")[1]), files[npzNames(files, "train")[1]])
			if c := e.proxy.Counts(); c.GetObject != 0 || c.GetBytes != 0 {
				t.Errorf("reading cached files made %d GETs (%d bytes), want none", c.GetObject, c.GetBytes)
			}
		}},
		{"a remount with the same cache dir makes no GET", true, func(t *testing.T) {
			e.waitNoOpenFiles(t, m)
			e.drop(t, m)
			m = e.mountAt(t, m.dir, m.cache)
			e.proxy.Reset()
			readAll(t, m.dir, files)
			name := npzNames(files, "dev")[0]
			if got, want := npzDigest(t, filepath.Join(m.dir, name)), npzDigest(t, filepath.Join(suite.dataset, name)); got != want {
				t.Errorf("numpy after remount:\n%s\nwant:\n%s", got, want)
			}
			if c := e.proxy.Counts(); c.GetObject != 0 || c.GetBytes != 0 {
				t.Errorf("reading everything after a remount made %d GETs (%d bytes), want none", c.GetObject, c.GetBytes)
			}
			s := e.status(t, m)
			if s.BytesFromS3 != 0 || s.S3GetRequests != 0 || s.Misses != 0 {
				t.Errorf("status after remount: %d bytes from S3, %d GETs, %d misses; want 0, 0, 0", s.BytesFromS3, s.S3GetRequests, s.Misses)
			}
			// Every file is complete: the kernel reads each itself in
			// passthrough mode, else the daemon serves every byte from SSD.
			if s.ReadMode == "passthrough" && s.PassthroughOpens < int64(len(files)) {
				t.Errorf("status after remount: %d passthrough opens, want >= %d (one per file)", s.PassthroughOpens, len(files))
			}
			if s.ReadMode != "passthrough" && (s.BytesFromSSD < total || s.Hits == 0) {
				t.Errorf("status after remount: %d bytes from SSD, %d hits; want >= %d bytes and some hits", s.BytesFromSSD, s.Hits, total)
			}
		}},
	}
	for _, s := range steps {
		if s.needsFill && t.Failed() {
			t.Fatalf("not running %q: an earlier step failed", s.name)
		}
		t.Run(s.name, s.fn)
	}
}

// readAll reads every file under root whole and compares it with files.
func readAll(t *testing.T, root string, files map[string][]byte) {
	t.Helper()
	for _, name := range sortedNames(files) {
		got, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Errorf("read %s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, files[name]) {
			t.Errorf("read %s: %d bytes that differ from the source's %d at offset %d",
				name, len(got), len(files[name]), firstDiff(got, files[name]))
		}
	}
}

// checkRanges reads path at random offsets and lengths, first its end as
// a ZIP reader does, and compares each read with want.
func checkRanges(t *testing.T, path string, want []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size := int64(len(want))
	rng := rand.New(rand.NewPCG(uint64(size), 2))
	type span struct{ off, n int64 }
	spans := []span{
		{size - 22, 22},       // the ZIP end-of-central-directory record
		{size - 64<<10, 4096}, // the central directory
		{0, 1},
		{mib - 3, 6},     // across the first block boundary
		{2*mib - 1, mib}, // a block-sized read off alignment
		{size - 10, 100}, // past the end: a short read
		{size + 5, 10},   // wholly past the end: EOF
		{size / 2, 0},    // empty
		{mib, 3 * mib},   // several blocks
	}
	for range 40 {
		off := rng.Int64N(size)
		spans = append(spans, span{off, 1 + rng.Int64N(min(2*mib, size-off)+64)})
	}
	for _, s := range spans {
		if s.off < 0 {
			continue
		}
		buf := make([]byte, s.n)
		n, err := f.ReadAt(buf, s.off)
		end := min(s.off+s.n, size)
		wantN := max(end-s.off, 0)
		if int64(n) != wantN || (err != nil && !errors.Is(err, io.EOF)) {
			t.Errorf("%s: ReadAt(%d bytes at %d) = %d, %v; want %d bytes", path, s.n, s.off, n, err, wantN)
			continue
		}
		if wantN > 0 && !bytes.Equal(buf[:n], want[s.off:end]) {
			t.Errorf("%s: ReadAt(%d bytes at %d) differs from the source at offset %d",
				path, s.n, s.off, s.off+int64(firstDiff(buf[:n], want[s.off:end])))
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// npzScript loads an .npz with numpy and prints, per array, its name,
// dtype, shape and a SHA-256 of its bytes.
const npzScript = `
import hashlib, sys
import numpy as np
with np.load(sys.argv[1]) as z:
    for name in sorted(z.files):
        a = z[name]
        print(name, a.dtype, a.shape, hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest())
`

// npzDigest runs npzScript on path with the system's numpy.
func npzDigest(t *testing.T, path string) string {
	t.Helper()
	out := runPython(t, "numpy.load "+path, npzScript, path)
	if strings.Count(out, "\n") < 2 {
		t.Fatalf("numpy.load %s printed too little:\n%s", path, out)
	}
	return out
}

// runPython runs script with args under the system's Python (what: for
// the failure message) and returns its standard output.
func runPython(t *testing.T, what, script string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, append([]string{"-c", script}, args...)...)
	cmd.Dir = "/"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, stderr.String())
	}
	return string(out)
}
