package index

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// FuzzDecodeRecord: decoding arbitrary bytes never panics, fails only with
// ErrCorrupt, and whatever decodes re-encodes to a value that decodes to the
// same record and is a fixed point of encoding.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range []Record{sampleRecord(), {ID: "e", BlockSize: 1}} {
		v, err := encodeRecord(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(v)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 2, 2, 0, 0, 1, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord("id", b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		v, err := encodeRecord(r)
		if err != nil {
			t.Fatalf("decoded record %+v does not encode: %v", r, err)
		}
		r2, err := decodeRecord("id", v)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !recordEqual(r, r2) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", r, r2)
		}
		if v2, _ := encodeRecord(r2); !bytes.Equal(v, v2) {
			t.Fatalf("encoding is not stable")
		}
	})
}

// FuzzDecodeListing is FuzzDecodeRecord for schema 1 listings (read by the
// upgrade only).
func FuzzDecodeListing(f *testing.F) {
	for _, l := range []Listing{sampleListing(), {}, {Dirs: []string{"a", "b"}}} {
		v, err := encodeListingV1(l)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(v)
	}
	f.Add([]byte{1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := decodeListingV1("p/", b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		v, err := encodeListingV1(l)
		if err != nil {
			t.Fatalf("decoded listing %+v does not encode: %v", l, err)
		}
		l2, err := decodeListingV1("p/", v)
		if err != nil {
			t.Fatalf("re-encoded listing does not decode: %v", err)
		}
		assertListingEqual(t, l2, l)
		if v2, _ := encodeListingV1(l2); !bytes.Equal(v, v2) {
			t.Fatalf("encoding is not stable")
		}
	})
}

// FuzzNames: whatever S3 returns, the mount never shows a name with "/" or
// NUL, "." or "..", an empty name, or one longer than 255 bytes, never shows
// a name twice, and the result can always be stored.
func FuzzNames(f *testing.F) {
	f.Add("data/", "data/a.npz", "data/train/", "data//")
	f.Add("", "..", "../", "/")
	f.Add("p/", "p/"+strings.Repeat("x", 256), "p/.", "p/a\x00b/")
	f.Add("p/", "p/x", "p/x/", "p/x")
	f.Fuzz(func(t *testing.T, prefix, key1, prefix1, key2 string) {
		res := ListResult{
			Objects:  []Object{{Key: key1}, {Key: key2}, {Key: prefix + key1}},
			Prefixes: []string{prefix1, prefix + prefix1, key2 + "/"},
		}
		l := toListing(prefix, res, time.Time{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		seen := map[string]bool{}
		var shown []string
		shown = append(shown, l.Dirs...)
		for _, o := range l.Files {
			if !strings.HasPrefix(o.Key, prefix) {
				t.Fatalf("file %q outside prefix %q", o.Key, prefix)
			}
			shown = append(shown, o.Key[len(prefix):])
		}
		for _, name := range shown {
			if name == "" || name == "." || name == ".." || len(name) > 255 || strings.ContainsAny(name, "/\x00") {
				t.Fatalf("bad name %q shown", name)
			}
			if seen[name] {
				t.Fatalf("name %q shown twice", name)
			}
			seen[name] = true
		}
		// The Catalog lists only prefixes that are "" or end in "/".
		if prefix != "" && !strings.HasSuffix(prefix, "/") {
			return
		}
		if err := checkListing(l); err != nil {
			t.Fatalf("listing cannot be stored: %v", err)
		}
	})
}

// FuzzDecodeEntry is FuzzDecodeRecord for listing entries.
func FuzzDecodeEntry(f *testing.F) {
	for _, e := range []Entry{{Name: "d", IsDir: true}, {Name: "f", Object: sampleListing().Files[0]}, {Name: "z"}} {
		f.Add(encodeEntry(e))
	}
	f.Add([]byte{1, 1, 0x80})
	f.Add([]byte{1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry("p/", []byte("n"), b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		v := encodeEntry(e)
		e2, err := decodeEntry("p/", []byte("n"), v)
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if e2.Name != e.Name || e2.IsDir != e.IsDir || !objectEqual(e2.Object, e.Object) {
			t.Fatalf("round trip changed the entry:\n%+v\n%+v", e, e2)
		}
		if !bytes.Equal(encodeEntry(e2), v) {
			t.Fatalf("encoding is not stable")
		}
	})
}

// FuzzDecodeFolderInfo is FuzzDecodeRecord for folder infos.
func FuzzDecodeFolderInfo(f *testing.F) {
	f.Add(encodeFolderInfo(FolderInfo{ListedAt: time.Unix(5, 6), Gen: 1, Entries: 3}))
	f.Add(encodeFolderInfo(FolderInfo{Gen: 1 << 40}))
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := decodeFolderInfo(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		v := encodeFolderInfo(info)
		info2, err := decodeFolderInfo(v)
		if err != nil {
			t.Fatalf("re-encoded folder info does not decode: %v", err)
		}
		if !info2.ListedAt.Equal(info.ListedAt) || info2.Gen != info.Gen || info2.Entries != info.Entries {
			t.Fatalf("round trip changed the folder info:\n%+v\n%+v", info, info2)
		}
		if !bytes.Equal(encodeFolderInfo(info2), v) {
			t.Fatalf("encoding is not stable")
		}
	})
}
