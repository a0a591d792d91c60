package index

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// assertListingEqual compares listings, times by instant.
func assertListingEqual(t *testing.T, got, want Listing) {
	t.Helper()
	if got.Prefix != want.Prefix || !got.ListedAt.Equal(want.ListedAt) || !slices.Equal(got.Dirs, want.Dirs) ||
		!slices.EqualFunc(got.Files, want.Files, objectEqual) {
		t.Errorf("listing:\n got %+v\nwant %+v", got, want)
	}
}

func objectEqual(a, b Object) bool {
	return a.Key == b.Key && a.Size == b.Size && a.ETag == b.ETag && a.LastModified.Equal(b.LastModified)
}

// recordEqual compares records, times by instant and presence bit by bit.
func recordEqual(a, b Record) bool {
	if a.ID != b.ID || a.Key != b.Key || a.Version != b.Version || a.Size != b.Size ||
		a.BlockSize != b.BlockSize || !a.LastAccess.Equal(b.LastAccess) || a.Present.Len() != b.Present.Len() {
		return false
	}
	for i := range a.Present.Len() {
		if a.Present.Has(i) != b.Present.Has(i) {
			return false
		}
	}
	return true
}

func sampleListing() Listing {
	at := time.Date(2025, 9, 19, 12, 30, 0, 999_999_999, time.FixedZone("CEST", 2*3600))
	return Listing{
		Prefix:   "cache/tusz/",
		ListedAt: at,
		Dirs:     []string{"dev", "train", "ü ñ"},
		Files: []Object{
			{Key: "cache/tusz/a.npz", Size: 70 << 20, ETag: "0123abcd-12", LastModified: at.Add(-time.Hour)},
			{Key: "cache/tusz/b.npz", Size: 0, ETag: "", LastModified: time.Time{}},
			{Key: "cache/tusz/c", Size: 1<<63 - 1, ETag: "x", LastModified: time.Unix(-5, 7)},
		},
	}
}

func sampleRecord() Record {
	r := Record{ID: "ab12", Key: "cache/tusz/a.npz", Version: "etag-1", Size: 10*1024 + 17, BlockSize: 1024,
		Present: NewBlocks(11), LastAccess: time.Unix(1700000000, 42)}
	for _, b := range []int64{0, 3, 7, 8, 10} {
		r.Present.Set(b)
	}
	return r
}

func TestListingCodecRoundTrip(t *testing.T) {
	for _, l := range []Listing{sampleListing(), {Prefix: ""}, {Prefix: "x/", ListedAt: time.Unix(1, 0), Dirs: []string{"only"}}} {
		v, err := encodeListingV1(l)
		if err != nil {
			t.Fatal(err)
		}
		if v[0] != codecV1 {
			t.Errorf("first byte %d, want codec version %d", v[0], codecV1)
		}
		got, err := decodeListingV1(l.Prefix, v)
		if err != nil {
			t.Fatal(err)
		}
		assertListingEqual(t, got, l)
		if got.ListedAt.Location() != time.UTC {
			t.Errorf("decoded time in %v, want UTC", got.ListedAt.Location())
		}
	}
}

func TestRecordCodecRoundTrip(t *testing.T) {
	empty := Record{ID: "e", Key: "k", Version: "v", BlockSize: 1 << 20}
	full := Record{ID: "f", Key: "k", Version: "v", Size: 64 * 3, BlockSize: 3, Present: NewBlocks(64)}
	for i := range int64(64) {
		full.Present.Set(i)
	}
	for _, r := range []Record{sampleRecord(), empty, full} {
		v, err := encodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeRecord(r.ID, v)
		if err != nil {
			t.Fatal(err)
		}
		if !recordEqual(got, r) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, r)
		}
	}
}

func TestEncodeRecordRefusesBadShape(t *testing.T) {
	good := sampleRecord()
	for name, mutate := range map[string]func(*Record){
		"empty ID":        func(r *Record) { r.ID = "" },
		"zero block size": func(r *Record) { r.BlockSize = 0 },
		"negative size":   func(r *Record) { r.Size = -1 },
		"wrong presence":  func(r *Record) { r.Present = NewBlocks(3) },
	} {
		r := good
		mutate(&r)
		if _, err := encodeRecord(r); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

// Every strict prefix of a valid value is a truncated value and must be
// refused; so must a value with a byte appended.
func TestDecodeRefusesTruncatedAndTrailing(t *testing.T) {
	lv, _ := encodeListingV1(sampleListing())
	rv, _ := encodeRecord(sampleRecord())
	for i := range len(lv) {
		if _, err := decodeListingV1("p/", lv[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("listing truncated to %d bytes: err = %v, want ErrCorrupt", i, err)
		}
	}
	for i := range len(rv) {
		if _, err := decodeRecord("id", rv[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("record truncated to %d bytes: err = %v, want ErrCorrupt", i, err)
		}
	}
	if _, err := decodeListingV1("p/", append(lv, 0)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("listing with a trailing byte: err = %v", err)
	}
	if _, err := decodeRecord("id", append(rv, 0)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("record with a trailing byte: err = %v", err)
	}
}

func TestDecodeRefusesMalformed(t *testing.T) {
	rv, _ := encodeRecord(sampleRecord())
	lv, _ := encodeListingV1(Listing{Dirs: []string{"a", "b"}})
	cases := map[string]struct {
		listing bool
		v       []byte
	}{
		"unknown codec version": {false, append([]byte{2}, rv[1:]...)},
		"bit past last block":   {false, flipLastBit(rv)},
		"unsorted dirs":         {true, swapDirs(lv)},
		"huge count":            {true, []byte{1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		"bad time nanos":        {true, []byte{1, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03, 0, 0}},
		"time beyond 9999":      {true, []byte{1, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0, 0}},
		"zero block size":       {false, []byte{1, 0, 0, 0, 0, 0, 0, 0}},
		"block count mismatch":  {false, []byte{1, 0, 0, 2, 2, 0, 0, 5, 0}},
		"empty":                 {false, nil},
	}
	for name, c := range cases {
		var err error
		if c.listing {
			_, err = decodeListingV1("", c.v)
		} else {
			_, err = decodeRecord("id", c.v)
		}
		t.Logf("%s: %v", name, err)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}

// flipLastBit sets the highest bit of the last bitmap byte; sampleRecord has
// 11 blocks, so that bit lies past the last block.
func flipLastBit(v []byte) []byte {
	v = slices.Clone(v)
	v[len(v)-1] |= 0x80
	return v
}

// swapDirs turns the encoded dirs "a","b" into "b","a".
func swapDirs(v []byte) []byte {
	s := string(v)
	i := strings.Index(s, "\x01a\x01b")
	return []byte(s[:i] + "\x01b\x01a" + s[i+4:])
}

func TestTimeClampedToStorableRange(t *testing.T) {
	l := Listing{ListedAt: time.Date(20000, 1, 1, 0, 0, 0, 0, time.UTC)}
	v, err := encodeListingV1(l)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeListingV1("", v)
	if err != nil {
		t.Fatalf("a clamped time must decode: %v", err)
	}
	if got.ListedAt.Year() != 9999 {
		t.Errorf("year %d, want clamped to 9999", got.ListedAt.Year())
	}
}
