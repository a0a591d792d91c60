package tier

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"strings"
)

// ErrDisproved means bytes from the tier are not the S3 object they were
// published as: their MD5 does not give the object's ETag. The entry is
// poisoned (or damaged) and must not be served.
var ErrDisproved = errors.New("tier entry is not the S3 object")

// Method is how a Prover shows bytes to be an S3 object version.
type Method int

const (
	// ByMD5: the ETag is the MD5 of the whole object (a single-part
	// upload without SSE-KMS).
	ByMD5 Method = iota
	// ByPartMD5: the ETag is "MD5-N", the MD5 of the N parts' MD5s of a
	// multipart upload, and the part size could be inferred from the
	// object's size and N (as `aws s3 cp`/`sync` and most SDKs upload:
	// every part but the last of one size, a whole number of MiB).
	ByPartMD5
	// Unprovable: the ETag says nothing about the bytes that can be
	// checked (SSE-KMS, a server's own scheme, a part size that cannot be
	// inferred). Only the size and the published checksums can be
	// checked, which anyone who can write the tier can forge; the caller
	// decides whether that is enough.
	Unprovable
)

func (m Method) String() string {
	switch m {
	case ByMD5:
		return "md5"
	case ByPartMD5:
		return "part-md5"
	}
	return "unprovable"
}

const mib = 1 << 20

// maxCandidates bounds the part sizes a Prover hashes for at once: each
// costs one MD5 of the whole object.
const maxCandidates = 3

// Prover proves that the bytes written to it, in order, are the S3 object
// with a given ETag and size. It is an io.Writer; Check says the verdict
// once every byte is written. Not safe for concurrent use.
type Prover struct {
	size    int64
	method  Method
	want    []byte // the ETag's MD5 (ByMD5, ByPartMD5)
	whole   hash.Hash
	parts   []*partHasher // ByPartMD5: one per candidate part size
	written int64
}

// partHasher hashes an object as a multipart upload with parts of size.
type partHasher struct {
	size   int64
	n      int // parts the ETag says there are
	cur    hash.Hash
	inPart int64  // bytes of the current part hashed
	sums   []byte // MD5s of the finished parts, concatenated
}

// NewProver returns a Prover for the object of etag (as S3 lists it, quotes
// removed) and size.
func NewProver(etag string, size int64) *Prover {
	p := &Prover{size: size, method: Unprovable}
	digest, parts, ok := parseETag(etag)
	switch {
	case !ok:
	case parts == 0:
		p.method, p.want, p.whole = ByMD5, digest, md5.New()
	default:
		for _, ps := range partSizes(size, parts) {
			p.parts = append(p.parts, &partHasher{size: ps, n: parts, cur: md5.New()})
		}
		if len(p.parts) > 0 {
			p.method, p.want = ByPartMD5, digest
		}
	}
	return p
}

// provable reports what NewProver(etag, size).Method() != Unprovable
// would, without making the hashers: the cache asks it of every object it
// first fetches.
func provable(etag string, size int64) bool {
	_, parts, ok := parseETag(etag)
	return ok && (parts == 0 || len(partSizes(size, parts)) > 0)
}

// Method says how the Prover can prove its object.
func (p *Prover) Method() Method { return p.method }

// Write hashes b as the next bytes of the object. It never fails.
func (p *Prover) Write(b []byte) (int, error) {
	p.written += int64(len(b))
	if p.whole != nil {
		p.whole.Write(b)
	}
	for _, h := range p.parts {
		h.write(b)
	}
	return len(b), nil
}

func (h *partHasher) write(b []byte) {
	for len(b) > 0 {
		n := min(int64(len(b)), h.size-h.inPart)
		h.cur.Write(b[:n])
		h.inPart += n
		b = b[n:]
		if h.inPart == h.size {
			h.endPart()
		}
	}
}

func (h *partHasher) endPart() {
	h.sums = h.cur.Sum(h.sums)
	h.cur.Reset()
	h.inPart = 0
}

// Check reports whether the bytes written are the object: nil if they are
// proven (ByMD5, ByPartMD5), or, for Unprovable, if at least their size is
// right; an error wrapping ErrDisproved if not.
func (p *Prover) Check() error {
	if p.written != p.size {
		return fmt.Errorf("%w: %d bytes, the object has %d", ErrDisproved, p.written, p.size)
	}
	switch p.method {
	case ByMD5:
		if got := p.whole.Sum(nil); !slices.Equal(got, p.want) {
			return fmt.Errorf("%w: MD5 %x, the ETag says %x", ErrDisproved, got, p.want)
		}
	case ByPartMD5:
		for _, h := range p.parts {
			if h.inPart > 0 {
				h.endPart()
			}
			if len(h.sums) != h.n*md5.Size {
				continue
			}
			if sum := md5.Sum(h.sums); slices.Equal(sum[:], p.want) {
				return nil
			}
		}
		return fmt.Errorf("%w: no part size gives the ETag %x-%d", ErrDisproved, p.want, p.parts[0].n)
	}
	return nil
}

// OnePartSize returns the part size and count of a multipart ETag
// (ByPartMD5) for which one part size is likely: its parts can then be
// hashed apart, in parallel, and proven with CheckParts instead of Write
// and Check.
func (p *Prover) OnePartSize() (size int64, parts int, ok bool) {
	if p.method != ByPartMD5 || len(p.parts) != 1 {
		return 0, 0, false
	}
	return p.parts[0].size, p.parts[0].n, true
}

// CheckParts is Check for an object hashed a part at a time: sums are the
// MD5s of its parts of the size OnePartSize gave, in order.
func (p *Prover) CheckParts(sums [][md5.Size]byte) error {
	size, parts, ok := p.OnePartSize()
	if !ok || len(sums) != parts {
		return fmt.Errorf("%w: %d part sums for the ETag's %d parts", ErrDisproved, len(sums), parts)
	}
	h := md5.New()
	for _, s := range sums {
		h.Write(s[:])
	}
	if got := h.Sum(nil); !slices.Equal(got, p.want) {
		return fmt.Errorf("%w: parts of %d MiB give %x-%d, the ETag says %x-%d", ErrDisproved, size/mib, got, parts, p.want, parts)
	}
	return nil
}

// parseETag splits an S3 ETag into its MD5 and, for a multipart upload,
// its part count (0 for a single part). ok is false for an ETag that is
// not of either form.
func parseETag(etag string) (digest []byte, parts int, ok bool) {
	hexPart, count, multi := strings.Cut(etag, "-")
	digest, err := hex.DecodeString(hexPart)
	if err != nil || len(digest) != md5.Size {
		return nil, 0, false
	}
	if !multi {
		return digest, 0, true
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 || n > 10000 {
		return nil, 0, false
	}
	return digest, n, true
}

// partSizes returns the likeliest part sizes of a multipart upload of size
// bytes in parts parts, at most maxCandidates, of those that give that many
// parts: the AWS CLI's and boto3's (8 MiB, doubled until the object fits
// in 10,000 parts), 16 and 5 MiB (other SDKs and tools), then the smallest
// whole number of MiB.
func partSizes(size int64, parts int) []int64 {
	fits := func(ps int64) bool { return ps > 0 && (size+ps-1)/ps == int64(parts) }
	cli := int64(8 * mib)
	for (size+cli-1)/cli > 10000 {
		cli *= 2
	}
	var out []int64
	for _, ps := range []int64{cli, 16 * mib, 5 * mib, ((size+int64(parts)-1)/int64(parts) + mib - 1) / mib * mib} {
		if fits(ps) && !slices.Contains(out, ps) && len(out) < maxCandidates {
			out = append(out, ps)
		}
	}
	return out
}
