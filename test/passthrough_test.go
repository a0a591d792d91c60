package test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// passthroughExpected reports whether this machine should give FUSE
// passthrough: Linux 6.9 or later, and root.
func passthroughExpected(t *testing.T) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	major, rest, _ := strings.Cut(release, ".")
	minorStr, _, _ := strings.Cut(rest, ".")
	maj, err1 := strconv.Atoi(major)
	minor, err2 := strconv.Atoi(strings.TrimRightFunc(minorStr, func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		t.Fatalf("cannot read kernel release %q", release)
	}
	return os.Geteuid() == 0 && (maj > 6 || maj == 6 && minor >= 9)
}

// readWhole reads f from offset 0 to the end.
func readWhole(t *testing.T, f *os.File) []byte {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<62))
	if err != nil {
		t.Fatalf("read %s: %v", f.Name(), err)
	}
	return b
}

// TestPassthrough follows one file from its first open (incomplete: read
// through the daemon) across its completion while still open, a second
// open during the first (which must keep the daemon's mode: the kernel
// fails an open whose mode differs from the inode's other opens), to the
// opens after both closed, which the kernel reads straight from the cache
// file without the daemon seeing a byte.
func TestPassthrough(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	// No read-ahead, neither ours nor the kernel's beyond its default:
	// reading half a file fetches only that half.
	m := e.mount(t, "--read-ahead", "0", "--kernel-read-ahead", "0", "--part-size", "1MiB")
	s := e.status(t, m)
	if passthroughExpected(t) && s.ReadMode != "passthrough" {
		t.Fatalf("read_mode %q (%s) on a kernel and user that allow passthrough", s.ReadMode, s.PassthroughOff)
	}
	if s.ReadMode != "passthrough" {
		t.Skipf("this machine gives no FUSE passthrough (%s); TestSplicedReads covers the daemon's mode", s.PassthroughOff)
	}
	name := npzNames(files, "train")[0]
	want := files[name]
	path := filepath.Join(m.dir, name)

	first, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	// Half the file, then check that it is still incomplete: the open
	// really began during the download.
	half := make([]byte, len(want)/2)
	if _, err := io.ReadFull(first, half); err != nil {
		t.Fatal(err)
	}
	if s := e.status(t, m); s.CompleteObjects != 0 || s.DaemonOpens != 1 || s.PassthroughOpens != 0 {
		t.Fatalf("after half a cold read: %d complete objects, %d daemon opens, %d passthrough opens; want 0, 1, 0",
			s.CompleteObjects, s.DaemonOpens, s.PassthroughOpens)
	}
	if got := readWhole(t, first); !bytes.Equal(got, want) {
		t.Fatalf("first open: bytes differ from the source at offset %d", firstDiff(got, want))
	}
	if s := e.status(t, m); s.CompleteObjects != 1 {
		t.Fatalf("after reading the whole file: %d complete objects, want 1", s.CompleteObjects)
	}

	// The file is complete while the first open is still in daemon mode.
	second, err := os.Open(path)
	if err != nil {
		t.Fatalf("second open while the first is open: %v", err)
	}
	if got := readWhole(t, second); !bytes.Equal(got, want) {
		t.Fatalf("second open: bytes differ from the source at offset %d", firstDiff(got, want))
	}
	if got := readWhole(t, first); !bytes.Equal(got, want) {
		t.Fatalf("first open after the second: bytes differ at offset %d", firstDiff(got, want))
	}
	if s := e.status(t, m); s.DaemonOpens != 2 || s.PassthroughOpens != 0 {
		t.Errorf("an open beside a daemon-mode open: %d daemon opens, %d passthrough; want 2, 0", s.DaemonOpens, s.PassthroughOpens)
	}
	second.Close()
	first.Close()
	e.waitNoOpenFiles(t, m)

	// Both closed: the next opens are passthrough, and two at once work.
	dropKernelCaches(t)
	before := e.status(t, m)
	e.proxy.Reset()
	third, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	fourth, err := os.Open(path)
	if err != nil {
		t.Fatalf("open beside a passthrough open: %v", err)
	}
	defer fourth.Close()
	for i, f := range []*os.File{third, fourth} {
		if got := readWhole(t, f); !bytes.Equal(got, want) {
			t.Fatalf("passthrough open %d: bytes differ from the source at offset %d", i+1, firstDiff(got, want))
		}
	}
	checkRanges(t, path, want)
	after := e.status(t, m)
	if after.PassthroughOpens < before.PassthroughOpens+3 {
		t.Errorf("passthrough_opens %d → %d after three opens of a complete file", before.PassthroughOpens, after.PassthroughOpens)
	}
	// The kernel read the cache file itself: the daemon served nothing.
	if after.Hits != before.Hits || after.Misses != before.Misses || after.BytesFromSSD != before.BytesFromSSD {
		t.Errorf("passthrough reads reached the daemon: hits %d → %d, misses %d → %d, bytes_from_ssd %d → %d",
			before.Hits, after.Hits, before.Misses, after.Misses, before.BytesFromSSD, after.BytesFromSSD)
	}
	e.wantNoRequests(t, "passthrough reads of a cached file")
}

// TestDaemonReads checks the daemon's own path for complete files, as
// used where passthrough is off: reads go through the daemon, which checks
// every block it reads from SSD, count as hits, and equal the source.
func TestDaemonReads(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	m := e.mount(t, "--passthrough=false")
	s := e.status(t, m)
	if s.ReadMode != "daemon" || s.PassthroughOff == "" {
		t.Fatalf("--passthrough=false: read_mode %q, passthrough_off %q; want daemon and a reason", s.ReadMode, s.PassthroughOff)
	}
	name := npzNames(files, "dev")[0]
	readAll(t, m.dir, map[string][]byte{name: files[name]})
	e.waitNoOpenFiles(t, m)
	dropKernelCaches(t)
	before := e.status(t, m)
	e.proxy.Reset()
	readAll(t, m.dir, map[string][]byte{name: files[name]})
	checkRanges(t, filepath.Join(m.dir, name), files[name])
	after := e.status(t, m)
	if after.PassthroughOpens != 0 {
		t.Errorf("%d passthrough opens with --passthrough=false", after.PassthroughOpens)
	}
	blocks := (int64(len(files[name])) + 1<<20 - 1) >> 20
	if got := after.BlocksChecked - before.BlocksChecked; got < blocks {
		t.Errorf("blocks_checked grew by %d reading a complete file of %d blocks", got, blocks)
	}
	if after.Hits <= before.Hits || after.Misses != before.Misses {
		t.Errorf("hits %d → %d, misses %d → %d; want more hits, no misses", before.Hits, after.Hits, before.Misses, after.Misses)
	}
	e.wantNoRequests(t, "reads of a cached file")
}
