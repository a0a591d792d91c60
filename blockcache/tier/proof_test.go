package tier

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	iofs "io/fs"
	"sync"
	"testing"

	"s3cachefs/blockcache/internal/cachetest"
	"s3cachefs/index"
)

// s3ETag is the ETag S3 gives data uploaded in parts of partSize (0: one
// PUT).
func s3ETag(data []byte, partSize int) string {
	if partSize == 0 {
		sum := md5.Sum(data)
		return hex.EncodeToString(sum[:])
	}
	var sums []byte
	n := 0
	for off := 0; off < len(data); off += partSize {
		sum := md5.Sum(data[off:min(off+partSize, len(data))])
		sums = append(sums, sum[:]...)
		n++
	}
	sum := md5.Sum(sums)
	return fmt.Sprintf("%s-%d", hex.EncodeToString(sum[:]), n)
}

// prove writes data to a Prover in uneven pieces and returns its verdict.
func prove(etag string, size int64, data []byte) (Method, error) {
	p := NewProver(etag, size)
	for off := 0; off < len(data); {
		n := min(len(data)-off, 1+off%(3*mib+17))
		p.Write(data[off : off+n])
		off += n
	}
	return p.Method(), p.Check()
}

// An object is proven by the ETag S3 gave it, single-part or multipart
// with any part size a common uploader uses; one flipped byte, a byte too
// many or too few, is disproved.
func TestProverProvesAndDisproves(t *testing.T) {
	data := cachetest.RandBytes(1, 21*mib+5)
	for _, c := range []struct {
		name     string
		partSize int
		method   Method
	}{
		{"one PUT", 0, ByMD5},
		{"8 MiB parts (aws s3 sync)", 8 * mib, ByPartMD5},
		{"16 MiB parts", 16 * mib, ByPartMD5},
		{"5 MiB parts", 5 * mib, ByPartMD5},
		{"6 MiB parts (the smallest whole MiB for 4 parts)", 6 * mib, ByPartMD5},
	} {
		t.Run(c.name, func(t *testing.T) {
			etag := s3ETag(data, c.partSize)
			size := int64(len(data))
			if m, err := prove(etag, size, data); m != c.method || err != nil {
				t.Fatalf("the object itself: %v, %v; want %v, proven", m, err, c.method)
			}
			bad := bytes.Clone(data)
			bad[len(bad)/2] ^= 1
			if _, err := prove(etag, size, bad); !errors.Is(err, ErrDisproved) {
				t.Errorf("one byte flipped: %v, want ErrDisproved", err)
			}
			if _, err := prove(etag, size, data[:len(data)-1]); !errors.Is(err, ErrDisproved) {
				t.Errorf("one byte short: %v, want ErrDisproved", err)
			}
			if _, err := prove(etag, size, append(bytes.Clone(data), 0)); !errors.Is(err, ErrDisproved) {
				t.Errorf("one byte more: %v, want ErrDisproved", err)
			}
		})
	}
}

// An ETag that is no MD5 (SSE-KMS, another server's scheme) or whose parts
// cannot be inferred proves nothing: only the size is checked, and the
// caller is told.
func TestProverUnprovable(t *testing.T) {
	data := cachetest.RandBytes(2, 3*mib)
	for _, etag := range []string{"", "not-an-md5", "synthetic0123", s3ETag(data, 0)[:30], s3ETag(data, 0) + "-0",
		s3ETag(data, 0) + "-40"} { // 40 parts of a 3 MiB object: no whole-MiB part size
		m, err := prove(etag, int64(len(data)), data)
		if m != Unprovable || err != nil {
			t.Errorf("ETag %q: %v, %v; want unprovable, size right", etag, m, err)
		}
		if _, err := prove(etag, int64(len(data))+1, data); !errors.Is(err, ErrDisproved) {
			t.Errorf("ETag %q, wrong size: %v, want ErrDisproved", etag, err)
		}
	}
}

// The AWS CLI doubles its 8 MiB parts until an object fits in 10,000: the
// part size of a 100 GB upload is inferred without reading it several
// times.
func TestPartSizesFollowTheCLI(t *testing.T) {
	const size = 100 << 30 // 100 GiB: 12,800 parts of 8 MiB, 6,400 of 16 MiB
	got := partSizes(size, 6400)
	if len(got) == 0 || got[0] != 16*mib {
		t.Errorf("part sizes for 100 GiB in 6,400 parts: %v, want 16 MiB first", got)
	}
	if got := partSizes(21*mib+5, 3); len(got) == 0 || got[0] != 8*mib {
		t.Errorf("part sizes for 21 MiB in 3 parts: %v, want 8 MiB first", got)
	}
	if got := partSizes(3*mib, 40); len(got) != 0 {
		t.Errorf("part sizes for 3 MiB in 40 parts: %v, want none", got)
	}
}

// The smallest whole number of MiB that fits an object in its parts is
// rounded up from the exact share: 2 MiB and a byte in 2 parts were
// uploaded in parts of 2 MiB, not 1 (which would need 3).
func TestPartSizesRoundUp(t *testing.T) {
	data := cachetest.RandBytes(7, 2*mib+1)
	etag := s3ETag(data, 2*mib)
	if m, err := prove(etag, int64(len(data)), data); m != ByPartMD5 || err != nil {
		t.Errorf("2 MiB and a byte in parts of 2 MiB: %v, %v; want proven by part MD5", m, err)
	}
}

// memAt is an io.WriterAt into memory that notes each block's writes.
type memAt struct {
	mu     sync.Mutex
	b      []byte
	writes map[int64]int
}

func (m *memAt) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.b[off:], p)
	m.writes[off]++
	return len(p), nil
}

// An object uploaded in parts of one likely size is copied out of the tier
// a part per worker, hashed apart: every block lands once where it
// belongs, and the part MD5s prove it; one byte changed in a middle part
// is disproved and the entry removed.
func TestFillParts(t *testing.T) {
	data := cachetest.RandBytes(8, 29*mib)
	v := Version{Bucket: "bucket", Key: "k", ETag: s3ETag(data, 8*mib), Size: int64(len(data))}
	if _, parts, ok := NewProver(v.ETag, v.Size).OnePartSize(); !ok || parts != 4 {
		t.Fatalf("the ETag %s does not name one part size (%d parts)", v.ETag, parts)
	}
	f, err := OpenFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Publish(context.Background(), v, bytes.NewReader(data), mib, blockSums(data, mib), nil); err != nil {
		t.Fatal(err)
	}
	s := NewShared(f, "bucket")
	obj := index.Object{Key: v.Key, ETag: v.ETag, Size: v.Size}
	w := &memAt{b: make([]byte, len(data)), writes: map[int64]int{}}
	if err := s.Fill(context.Background(), obj, w, mib); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.b, data) || len(w.writes) != 29 {
		t.Fatalf("filled %d blocks, bytes equal %v", len(w.writes), bytes.Equal(w.b, data))
	}
	for off, n := range w.writes {
		if n != 1 || off%mib != 0 {
			t.Errorf("block at %d written %d times", off, n)
		}
	}
	if err := flipAt(f.entryPath(Name(v)), 13*mib+7); err != nil {
		t.Fatal(err)
	}
	w = &memAt{b: make([]byte, len(data)), writes: map[int64]int{}}
	if err := s.Fill(context.Background(), obj, w, mib); !errors.Is(err, ErrDisproved) {
		t.Fatalf("Fill of an entry with a byte changed: %v, want ErrDisproved", err)
	}
	if _, err := f.Open(context.Background(), v); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("the disproved entry is still there: %v", err)
	}
}

// provable agrees with what a Prover says, for every kind of ETag.
func TestProvableAgreesWithProver(t *testing.T) {
	data := cachetest.RandBytes(10, 21*mib+5)
	for _, etag := range []string{s3ETag(data, 0), s3ETag(data, 8*mib), s3ETag(data, 3*mib), "", "not-an-etag", "0123456789abcdef0123456789abcdef-0", "0123456789abcdef0123456789abcdef-40"} {
		if got, want := provable(etag, int64(len(data))), NewProver(etag, int64(len(data))).Method() != Unprovable; got != want {
			t.Errorf("ETag %q: provable %v, the Prover says %v", etag, got, want)
		}
	}
}
