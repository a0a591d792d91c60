package blockcache

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"s3cachefs/index"
)

func FuzzObjectPath(f *testing.F) {
	for _, k := range []string{"a/b.npz", "../../etc/passwd", "/abs", "..", "a//b/", "\x00", strings.Repeat("x/", 300)} {
		f.Add("bucket", k, "etag", int64(5))
	}
	dir := "/cache"
	f.Fuzz(func(t *testing.T, bucket, key, etag string, size int64) {
		obj := index.Object{Key: key, ETag: etag, Size: size, LastModified: time.Unix(size, 0)}
		id := ObjectID(bucket, obj)
		p := objectPath(dir, id)
		rel, err := filepath.Rel(filepath.Join(dir, "objects"), p)
		if err != nil || strings.HasPrefix(rel, "..") || filepath.Base(p) != id || len(id) != 64 {
			t.Fatalf("key %q maps to %q, outside the cache", key, p)
		}
		if key != "" && strings.Contains(p, key) && len(key) > 2 && !isHex(key) {
			t.Fatalf("path %q contains the key %q", p, key)
		}
	})
}

func isHex(s string) bool {
	return strings.Trim(s, "0123456789abcdef/") == ""
}

func TestObjectIDDistinguishesVersions(t *testing.T) {
	a := index.Object{Key: "k", ETag: "e1", Size: 1}
	b := a
	b.ETag = "e2"
	c := a
	c.Size = 2
	if ObjectID("b", a) == ObjectID("b", b) || ObjectID("b", a) == ObjectID("b", c) || ObjectID("b", a) == ObjectID("x", a) {
		t.Fatal("distinct versions share an ID")
	}
	if ObjectID("b", a) != ObjectID("b", a) {
		t.Fatal("ID not stable")
	}
}
