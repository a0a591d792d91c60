package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestNodeLimitPicksOldestUnused checks the sweep's choice: oldest first,
// a node used since it was queued gets a second chance, an open node is
// kept, a forgotten one leaves the queue, and about a tenth below the
// bound stays.
func TestNodeLimitPicksOldestUnused(t *testing.T) {
	l := newNodeLimit(10)
	nodes := make([]*fileNode, 20)
	for i := range nodes {
		nodes[i] = &fileNode{path: fmt.Sprint(i)}
		l.made(nodes[i])
	}
	l.used(nodes[0])        // recent: second chance
	nodes[1].opens.Store(1) // open: kept
	l.forgot(nodes[2])      // gone already
	l.forgot(nodes[2])      // counted once
	if got := l.Live(); got != 19 {
		t.Fatalf("live = %d, want 19", got)
	}
	var got []string
	for _, n := range l.pick() {
		got = append(got, n.path)
	}
	// 19 live, keep 9: prune 10, skipping 0 (recent), 1 (open), 2 (gone).
	if want := []string{"3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}; !slices.Equal(got, want) {
		t.Errorf("first sweep picked %v, want %v", got, want)
	}
	// The kernel forgets what was pruned; the next sweep goes on where
	// the first stopped (nodes 0 and 1 went to the back).
	for _, n := range nodes[3:13] {
		l.forgot(n)
	}
	for i := 20; i < 23; i++ {
		l.made(&fileNode{path: fmt.Sprint(i)})
	}
	got = got[:0]
	for _, n := range l.pick() {
		got = append(got, n.path)
	}
	if want := []string{"13", "14", "15"}; !slices.Equal(got, want) {
		t.Errorf("second sweep picked %v, want %v", got, want)
	}
}

// TestMountNodeBound scans a mount of more files than its node bound: the
// kernel is asked to forget the least recently used nodes, so the daemon
// keeps about the bound, while every file still stats and reads right and
// an open file keeps its node. Both ways of asking are tried: prune
// notifications (Linux 6.18) and delete notifications (older kernels).
func TestMountNodeBound(t *testing.T) {
	t.Run("prune", func(t *testing.T) { testMountNodeBound(t, true) })
	t.Run("delete", func(t *testing.T) { testMountNodeBound(t, false) })
}

func testMountNodeBound(t *testing.T, prune bool) {
	sizes := map[string]int{}
	for i := range 3000 {
		sizes[fmt.Sprintf("d%d/f%04d", i%3, i)] = i % 7
	}
	fx := newFixture(sizes)
	fx.maxNodes = 200
	dir, root := mountFixture(t, fx, time.Hour)
	if !root.m.notify {
		t.Skip("this FUSE side takes no notifications: no bound")
	}
	if prune && !root.m.prune.Load() {
		t.Skip("this kernel takes no prune notifications")
	}
	root.m.prune.Store(prune)
	held, err := os.Open(filepath.Join(dir, "d0/f0000"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for range 2 {
		for p, want := range fx.data {
			fi, err := os.Stat(filepath.Join(dir, p))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != int64(len(want)) {
				t.Fatalf("%s: size %d, want %d", p, fi.Size(), len(want))
			}
		}
	}
	// The last sweep ran at most a tenth of the bound before the end.
	waitUntil(t, "the kernel to forget nodes past the bound", func() bool { return root.m.nodes.Live() <= 220 })
	if f := root.GetChild("d0").GetChild("f0000"); f == nil || f.Operations().(*fileNode).forgotten.Load() {
		t.Errorf("the node of the open file was forgotten")
	}
	got := make([]byte, 16)
	if n, err := held.ReadAt(got, 0); n != 0 || err == nil {
		t.Errorf("read of the empty held file: %d bytes, %v", n, err)
	}
	if _, err := held.Stat(); err != nil {
		t.Errorf("stat of the held file: %v", err)
	}
	for _, p := range []string{"d1/f0001", "d2/f2999"} {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || string(b) != string(fx.data[p]) {
			t.Errorf("%s after the sweeps: %q, %v; want %q", p, b, err, fx.data[p])
		}
	}
}

// waitUntil polls cond until it holds, failing t after 30 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A scandir (names and types, no stat) of a big folder makes no node per
// name: the mount asks for READDIRPLUS only when the reader stats what it
// lists, so the node bound never has to prune what a plain `ls` read.
func TestMountScandirMakesNoNodes(t *testing.T) {
	sizes := map[string]int{}
	for i := range 5000 {
		sizes[fmt.Sprintf("d/f%04d", i)] = 1
	}
	fx := newFixture(sizes)
	dir, root := mountFixture(t, fx, time.Hour)
	for i := range 2 {
		es, err := os.ReadDir(filepath.Join(dir, "d"))
		if err != nil || len(es) != 5000 {
			t.Fatalf("readdir %d: %d entries, %v; want 5000", i+1, len(es), err)
		}
	}
	// At most the first reply of the first read is READDIRPLUS (the
	// kernel's heuristic): one page of entries.
	if n := root.m.nodes.Live(); n > 100 {
		t.Errorf("%d file nodes after two scandirs of 5,000 names, want at most 100", n)
	}
	fi, err := os.Stat(filepath.Join(dir, "d/f4999"))
	if err != nil || fi.Size() != 1 {
		t.Fatalf("stat after the scandirs: %v, %v", fi, err)
	}
}
