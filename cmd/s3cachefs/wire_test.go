package main

import (
	"encoding/json"
	"testing"

	"s3cachefs/blockcache/prefetch"
)

// TestWireSameJSON: the api types say on the socket exactly what
// the prefetch package's types said when the daemon sent them as they were.
func TestWireSameJSON(t *testing.T) {
	same := func(what string, old, wire any) {
		t.Helper()
		a, errA := json.Marshal(old)
		b, errB := json.Marshal(wire)
		if errA != nil || errB != nil || string(a) != string(b) {
			t.Errorf("%s:\nprefetch   %s (%v)\nwire       %s (%v)", what, a, errA, b, errB)
		}
	}
	running := prefetch.Progress{ID: "20250101T000000.000-1", State: "running", ElapsedSeconds: 1.5,
		Folders: []prefetch.FolderProgress{{Path: "train", Files: 3, FilesDone: 1, Bytes: 300, BytesDone: 100, CachedAtStart: 50}, {Path: ""}}}
	failed := prefetch.Progress{ID: "x", State: "failed", Error: "3 objects failed", Failed: []string{"a", "b"}}
	for _, p := range []prefetch.Progress{running, failed, {}} {
		same("job "+p.State, p, jobWire(p))
	}
	for _, ps := range [][]prefetch.Progress{nil, {}, {running, failed}} {
		same("job list", ps, jobsWire(ps))
	}
	reports := []prefetch.FolderReport{
		{Path: "dev", InS3: 4, Bytes: 400, Cached: 1, Partial: 1, Stale: 1, Missing: 1, Checked: 1, Unchecked: 0, Corrupt: []string{"dev/a@0"}},
		{Path: ""},
	}
	for _, rs := range [][]prefetch.FolderReport{nil, {}, reports} {
		same("verify reports", rs, reportsWire(rs))
	}
	if got, want := jobWire(running).Totals(), running.Totals(); got.Files != want.Files || got.BytesDone != want.BytesDone || got.CachedAtStart != want.CachedAtStart {
		t.Errorf("Totals %+v, want %+v", got, want)
	}
}
