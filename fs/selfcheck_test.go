package fs

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestSelfCheckOnLinux: Linux keeps FLUSH's and GETXATTR's ENOSYS to
// itself, so the self-check needs no fallback here; its probe file is gone
// once the mount is handed out, and was never listed.
func TestSelfCheckOnLinux(t *testing.T) {
	fx := newFixture(testSizes)
	mnt, root := mountFixture(t, fx, time.Second)
	st := root.Stats()
	if st.Kernel == "" {
		t.Error("Stats().Kernel is empty: the INIT of the FUSE side is not reported")
	}
	if len(st.Fallbacks) != 0 {
		t.Errorf("fallbacks on Linux: %q, want none", st.Fallbacks)
	}
	// The kernel may still hold the probe's entry for the jiffy its 1ns
	// timeout rounds up to; the tree's own answer is what counts.
	var out fuse.EntryOut
	if _, errno := root.Lookup(context.Background(), root.m.probe.name, &out); errno != syscall.ENOENT {
		t.Errorf("lookup of the probe after the self-check: %v, want ENOENT", errno)
	}
	ents, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == root.m.probe.name {
			t.Error("the probe is listed in the root")
		}
	}
	// Every close of a file succeeds.
	for p := range fx.objs {
		f, err := os.Open(filepath.Join(mnt, p))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("close %s: %v", p, err)
		}
		break
	}
}

// TestQuirksAnswers: once the self-check found that ENOSYS reaches the
// caller, FLUSH succeeds and the xattr calls answer "none".
func TestQuirksAnswers(t *testing.T) {
	var q quirks
	if q.flush() != syscall.ENOSYS {
		t.Error("FLUSH before any quirk: want ENOSYS")
	}
	if _, e := q.getxattr(); e != syscall.ENOSYS {
		t.Error("GETXATTR before any quirk: want ENOSYS")
	}
	q.flushOK.Store(true)
	q.xattrNone.Store(true)
	if q.flush() != 0 {
		t.Error("FLUSH with flushOK: want success")
	}
	if _, e := q.getxattr(); e != syscall.ENODATA {
		t.Errorf("GETXATTR with xattrNone: %v, want ENODATA", e)
	}
	if n, e := q.listxattr(); n != 0 || e != 0 {
		t.Errorf("LISTXATTR with xattrNone: %d, %v; want 0, success", n, e)
	}
}
