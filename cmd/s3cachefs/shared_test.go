package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"s3cachefs/blockcache/tier"
)

// TestSharedGC runs `shared gc` on a folder tier that holds entries
// published as nodes publish them: it removes the least recently used
// until the rest fit, says so in two lines, leaves removed entries in the
// trash for the grace, and with --grace 0 deletes them at once. The tier's
// own folder may be given instead of the one holding it.
func TestSharedGC(t *testing.T) {
	dir := t.TempDir()
	f, err := tier.OpenFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "s3cachefs-tier-v1")
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	now := time.Now()
	var vs []tier.Version
	var size int64
	for i := range 3 {
		data := bytes.Repeat([]byte{byte(i)}, 1000)
		v := tier.Version{Bucket: "b", Key: fmt.Sprintf("train/%d.npz", i), ETag: fmt.Sprintf("etag%d", i), Size: int64(len(data))}
		if err := f.Publish(context.Background(), v, bytes.NewReader(data), 1<<20, []uint32{crc32.Checksum(data, castagnoli)}, nil); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(root, "objects", tier.Name(v)[:2], tier.Name(v))
		used := now.Add(time.Duration(i-3) * time.Hour) // entry 0 the least recently used
		if err := os.Chtimes(path, used, used); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		size = fi.Size()
		vs = append(vs, v)
	}
	left := func() []bool {
		var out []bool
		for _, v := range vs {
			_, err := os.Stat(filepath.Join(root, "objects", tier.Name(v)[:2], tier.Name(v)))
			if err != nil && !errors.Is(err, iofs.ErrNotExist) {
				t.Fatal(err)
			}
			out = append(out, err == nil)
		}
		return out
	}
	trash := func() int {
		des, err := os.ReadDir(filepath.Join(root, "trash"))
		if err != nil {
			t.Fatal(err)
		}
		return len(des)
	}
	gc := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"shared", "gc"}, args...), &stdout, &stderr); code != 0 || stderr.Len() != 0 {
			t.Fatalf("shared gc %v: exit %d, stderr %q", args, code, stderr.String())
		}
		if n := strings.Count(stdout.String(), "\n"); n != 2 {
			t.Errorf("shared gc printed %d lines, want 2: %q", n, stdout.String())
		}
		return stdout.String()
	}

	out := gc(dir, "--max-size", strconv.FormatInt(2*size, 10))
	if got := left(); fmt.Sprint(got) != "[false true true]" {
		t.Errorf("entries left %v, want all but the least recently used", got)
	}
	for _, want := range []string{"3 entries", "1 (" + humanBytes(size) + ") removed", "2 (" + humanBytes(2*size) + ") left", "1 (" + humanBytes(size) + ") kept for the grace of 15m0s"} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q does not say %q", out, want)
		}
	}
	if n := trash(); n != 1 {
		t.Errorf("%d files in trash, want the removed entry", n)
	}

	out = gc(root, "--max-size", "0", "--grace", "0")
	if got := left(); fmt.Sprint(got) != "[false false false]" {
		t.Errorf("entries left %v, want none", got)
	}
	if n := trash(); n != 0 {
		t.Errorf("%d files in trash after --grace 0, want none", n)
	}
	if !strings.Contains(out, "2 entries") || !strings.Contains(out, "3 files ("+humanBytes(3*size)+") deleted") {
		t.Errorf("output %q does not say 2 entries before and 3 files deleted", out)
	}
}
