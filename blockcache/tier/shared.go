package tier

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"runtime"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"s3cachefs/index"
)

// Store is where a tier keeps its entries and claims: a Folder, or a
// Bucket. All methods may be called concurrently, by any number of nodes.
type Store interface {
	// Open opens the entry of v. No entry gives an error wrapping
	// io/fs.ErrNotExist; one that cannot be v's (not a regular file,
	// a damaged or foreign trailer, cut short) one wrapping ErrDisproved,
	// and it is removed. Nothing read from it is proven yet.
	Open(ctx context.Context, v Version) (EntryReader, error)
	// Publish stores v read from data (v.Size bytes) with the CRC-32C of
	// each block of blockSize, whole or not at all, and only if verify
	// (when not nil) passes once every byte is read; an entry already
	// there is kept.
	Publish(ctx context.Context, v Version, data io.Reader, blockSize int64, sums []uint32, verify func() error) error
	// Claim, AwaitClaim: see Folder.Claim and Folder.AwaitClaim (a
	// Bucket's are the same with objects for files).
	Claim(ctx context.Context, v Version) (release func(), ok bool, err error)
	AwaitClaim(ctx context.Context, v Version) error
	// Touch records that v's entry was just used (for gc's order); a
	// Bucket's does nothing.
	Touch(ctx context.Context, v Version) error
}

// EntryReader is an opened entry: the object's bytes (ReadAt, past which
// it reads io.EOF), not yet proven.
type EntryReader interface {
	io.ReaderAt
	// Remove deletes the entry (one disproved) unless another node put
	// a new one under its name meanwhile.
	Remove() error
	Close() error
}

// Shared is a Store as the block cache uses it (blockcache.Tier) for the
// objects of one bucket: it copies an entry out only with its proof, and
// removes an entry it disproves.
type Shared struct {
	store  Store  // set once
	bucket string // set once
	// disproved counts the publishes in a row whose bytes from S3 did
	// not give their ETag; from maxDisproved on, the bucket's ETags are
	// taken for what SSE-KMS gives (not MD5s) and nothing of it is shared.
	disproved atomic.Int32
}

// maxDisproved is how many objects in a row whose S3 bytes do not give
// their MD5-looking ETag make Shared stop sharing the bucket's objects.
const maxDisproved = 3

// NewShared returns the tier in store for the objects of bucket.
func NewShared(store Store, bucket string) *Shared {
	return &Shared{store: store, bucket: bucket}
}

func (s *Shared) version(obj index.Object) Version {
	return Version{Bucket: s.bucket, Key: obj.Key, ETag: obj.ETag, Size: obj.Size}
}

// Provable reports whether obj's ETag proves bytes to be obj (Prover):
// only such objects are taken from the tier, claimed or published.
func (s *Shared) Provable(obj index.Object) bool {
	return provable(obj.ETag, obj.Size) && s.disproved.Load() < maxDisproved
}

// Fill writes obj's entry to w, a block of blockSize at a time (each
// WriteAt is one whole block, the last one short, at its offset; in any
// order and concurrently), hashing it as it goes, and returns nil only
// once it is proven to be obj (Prover). The parts of a multipart upload
// are read and hashed in parallel; a single-part object in order. An
// object whose ETag proves nothing is not taken from the tier: an error
// wrapping io/fs.ErrNotExist, as for an object the tier does not hold or
// an entry that cannot be opened (the tier unreachable). An entry disproved, or whose trailer is damaged, is removed and reported
// with an error wrapping ErrDisproved. An error from w is returned wrapped.
func (s *Shared) Fill(ctx context.Context, obj index.Object, w io.WriterAt, blockSize int64) error {
	v := s.version(obj)
	p := NewProver(v.ETag, v.Size)
	if p.Method() == Unprovable {
		return fmt.Errorf("shared cache: the ETag of %s proves nothing: %w", obj.Key, iofs.ErrNotExist)
	}
	e, err := s.store.Open(ctx, v)
	if err != nil && !errors.Is(err, ErrDisproved) && !errors.Is(err, iofs.ErrNotExist) && ctx.Err() == nil {
		// The tier cannot be reached, or denies access: for the cache
		// that is no entry, like a miss, not an entry refused (which it
		// warns of each time). Its claims and publishes fail too, and
		// the cache warns of those once.
		return fmt.Errorf("%w: shared cache entry of %s cannot be opened: %w", iofs.ErrNotExist, obj.Key, err)
	}
	if err != nil {
		return err
	}
	defer e.Close()
	if ps, parts, ok := p.OnePartSize(); ok && parts > 1 && ps%blockSize == 0 {
		err = fillParts(ctx, e, w, v.Size, blockSize, ps, parts, p)
	} else {
		err = fillInOrder(ctx, e, w, v.Size, blockSize, p)
	}
	if errors.Is(err, ErrDisproved) {
		err = fmt.Errorf("shared cache entry of %s: %w", obj.Key, err)
		return errors.Join(err, e.Remove())
	}
	if err != nil {
		return fmt.Errorf("copy %s from the shared cache: %w", obj.Key, err)
	}
	// For gc's least recently used order; a tier this node may only
	// read keeps the order of its writers.
	s.store.Touch(ctx, v)
	return nil
}

// fillInOrder copies [0, size) of e to w a block at a time, in order,
// through p, and checks p.
func fillInOrder(ctx context.Context, e io.ReaderAt, w io.WriterAt, size, blockSize int64, p *Prover) error {
	buf := make([]byte, blockSize)
	for off := int64(0); off < size; off += blockSize {
		if err := copyBlock(ctx, e, w, buf[:min(blockSize, size-off)], off, p); err != nil {
			return err
		}
	}
	return p.Check()
}

// fillWorkers bounds the parts fillParts copies at once.
var fillWorkers = min(8, max(2, runtime.GOMAXPROCS(0)))

// fillParts copies e to w as parts parts of partSize, several at once,
// each hashed apart, and proves the whole with p.CheckParts.
func fillParts(ctx context.Context, e io.ReaderAt, w io.WriterAt, size, blockSize, partSize int64, parts int, p *Prover) error {
	sums := make([][md5.Size]byte, parts)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(fillWorkers)
	for i := range parts {
		g.Go(func() error {
			h := md5.New()
			buf := make([]byte, blockSize)
			start := int64(i) * partSize
			end := min(start+partSize, size)
			for off := start; off < end; off += blockSize {
				if err := copyBlock(ctx, e, w, buf[:min(blockSize, end-off)], off, h); err != nil {
					return err
				}
			}
			h.Sum(sums[i][:0])
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return p.CheckParts(sums)
}

// copyBlock reads the block at off of e into b (its length), hashes it
// into h and writes it to w.
func copyBlock(ctx context.Context, e io.ReaderAt, w io.WriterAt, b []byte, off int64, h io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if n, err := e.ReadAt(b, off); n < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: the entry ends at %d", ErrDisproved, off+int64(n))
		}
		return err
	}
	h.Write(b)
	if _, err := w.WriteAt(b, off); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// Publish stores obj in the tier (Store.Publish), proving the bytes as
// they are read: an object whose bytes do not give its ETag (an ETag that
// is not an MD5 although it looks like one, as with SSE-KMS) is not
// published, since no node would take it; nor is one whose ETag proves
// nothing.
func (s *Shared) Publish(ctx context.Context, obj index.Object, r io.Reader, blockSize int64, sums []uint32) error {
	v := s.version(obj)
	p := NewProver(v.ETag, v.Size)
	if p.Method() == Unprovable {
		return nil
	}
	err := s.store.Publish(ctx, v, io.TeeReader(r, p), blockSize, sums, p.Check)
	switch {
	case errors.Is(err, ErrDisproved):
		s.disproved.Add(1)
	case err == nil:
		s.disproved.Store(0)
	}
	return err
}

// Claim claims obj in the tier (Store.Claim).
func (s *Shared) Claim(ctx context.Context, obj index.Object) (release func(), ok bool, err error) {
	return s.store.Claim(ctx, s.version(obj))
}

// AwaitClaim waits for another node's claim on obj (Store.AwaitClaim).
func (s *Shared) AwaitClaim(ctx context.Context, obj index.Object) error {
	return s.store.AwaitClaim(ctx, s.version(obj))
}
