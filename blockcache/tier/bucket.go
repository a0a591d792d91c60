package tier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"s3cachefs/index"
)

// Objects is what a Bucket needs of the bucket it lives in
// (s3store.Store has it). All methods may be called concurrently. Errors
// wrap io/fs.ErrNotExist for a missing key, io/fs.ErrExist for a Create of
// a key that is there, and index.ErrStale for a GetRange or Delete of
// another version than the ETag given.
type Objects interface {
	// GetRange reads bytes [off, off+n) of key's version etag (any
	// version when ""); a range past the end wraps index.ErrStale. The
	// caller closes the reader.
	GetRange(ctx context.Context, key, etag string, off, n int64) (io.ReadCloser, error)
	// Head gives key's size, ETag and last modification time.
	Head(ctx context.Context, key string) (index.Object, error)
	// Create stores body (size bytes) under key only if nothing is there
	// (If-None-Match: *).
	Create(ctx context.Context, key string, body io.ReadSeeker, size int64) error
	// Put stores body under key, replacing what is there.
	Put(ctx context.Context, key string, body io.ReadSeeker, size int64) error
	// Delete deletes key, only while it holds etag when etag is not "";
	// a missing key is not an error.
	Delete(ctx context.Context, key, etag string) error
}

// BucketOptions configure a Bucket.
type BucketOptions struct {
	// Prefix is the key prefix the tier lives under (its
	// s3cachefs-tier-v1/ folder); "" the bucket's root. Slashes at
	// either end are ignored.
	Prefix string
	// ClaimTTL is how long a claim outlives its node's last renewal.
	// Default DefaultClaimTTL; every node of a tier should use the same.
	ClaimTTL time.Duration
	// TempDir is the local folder Publish stages an entry in before it
	// sends it (a file unlinked at once, so nothing stays behind a
	// crash). Default os.TempDir(); the daemon gives its cache dir,
	// since /tmp may be memory.
	TempDir string
}

// maxBucketEntry is the largest entry a Bucket publishes: S3's largest
// object (past 5 GiB, Objects.Create makes a multipart upload).
const maxBucketEntry = 5 << 40

// Reads of an entry: in ranges of bucketChunk, each read starting the
// fetch of the bucketAhead after its own; at most bucketChunks held per
// entry (96 MiB).
const (
	bucketChunk  = 8 << 20
	bucketAhead  = 3
	bucketChunks = 12
)

// removeTimeout bounds the requests that release a claim or remove an
// entry: they are made after the caller's context may have ended.
const removeTimeout = 10 * time.Second

// Bucket is a tier kept in a bucket near the nodes (S3 Express One Zone,
// MinIO, Ceph): entries and claims are objects under
// PREFIX/s3cachefs-tier-v1/ (see doc.go). All methods may be called
// concurrently, by any number of processes and nodes. A Bucket starts no
// goroutine of its own but a claim's renewal (stopped by its release) and
// an open entry's reads (stopped by its Close).
type Bucket struct {
	// Set once in NewBucket.
	objs     Objects
	root     string // PREFIX/s3cachefs-tier-v1/, or s3cachefs-tier-v1/
	claimTTL time.Duration
	tempDir  string
}

var _ Store = (*Bucket)(nil)

// NewBucket returns the tier in the bucket of objs. It sends no request:
// a bucket that cannot be reached shows in the errors of its methods.
func NewBucket(objs Objects, opts BucketOptions) *Bucket {
	b := &Bucket{objs: objs, root: folderLayout + "/", claimTTL: opts.ClaimTTL, tempDir: opts.TempDir}
	if p := strings.Trim(opts.Prefix, "/"); p != "" {
		b.root = p + "/" + b.root
	}
	if b.claimTTL <= 0 {
		b.claimTTL = DefaultClaimTTL
	}
	if b.tempDir == "" {
		b.tempDir = os.TempDir()
	}
	return b
}

// EntryKey is the key of v's entry in the bucket.
func (b *Bucket) EntryKey(v Version) string { return b.entryKey(Name(v)) }

func (b *Bucket) entryKey(name string) string { return b.root + "objects/" + name[:2] + "/" + name }

// Publish stores v read from data (exactly v.Size bytes) with the CRC-32C
// of each block of blockSize as v's entry, if verify (when not nil) passes
// once every byte is read. Since a PutObject cannot be taken back once its
// body is sent, the entry is first written to an unlinked file in
// TempDir, then verified, then sent from there with If-None-Match: *, so
// that it appears whole or not at all, and an entry already there (another
// node's) is kept: that is no error.
func (b *Bucket) Publish(ctx context.Context, v Version, data io.Reader, blockSize int64, sums []uint32, verify func() error) error {
	if err := checkSums(v, blockSize, sums); err != nil {
		return err
	}
	if _, err := b.objs.Head(ctx, b.entryKey(Name(v))+unprovableSuffix); err == nil {
		return fmt.Errorf("publish %s: %w", v.Key, errMarkedUnprovable)
	}
	size := v.Size + int64(len(encodeTrailer(v, blockSize, sums)))
	if size > maxBucketEntry {
		return fmt.Errorf("publish %s: an entry of %d bytes: S3 objects take at most 5 TiB", v.Key, size)
	}
	tmp, err := os.CreateTemp(b.tempDir, ".s3cachefs-publish-*")
	if err != nil {
		return fmt.Errorf("publish %s: %w", v.Key, err)
	}
	os.Remove(tmp.Name()) // the open file is enough
	defer tmp.Close()
	if err := writeEntryTo(ctx, tmp, v, data, blockSize, sums); err != nil {
		return fmt.Errorf("publish %s: %w", v.Key, err)
	}
	if verify != nil {
		if err := verify(); err != nil {
			if errors.Is(err, ErrDisproved) {
				// As Folder.markUnprovable; a mark not made costs only that.
				b.objs.Create(ctx, b.entryKey(Name(v))+unprovableSuffix, bytes.NewReader(nil), 0)
			}
			return fmt.Errorf("publish %s: %w", v.Key, err)
		}
	}
	err = b.objs.Create(ctx, b.EntryKey(v), io.NewSectionReader(tmp, 0, size), size)
	if err != nil && !errors.Is(err, iofs.ErrExist) {
		return fmt.Errorf("publish %s: %w", v.Key, err)
	}
	return nil
}

// Open opens the entry of v, pinned to the ETag its HEAD gave: every read
// of it asks for that version (If-Match), so the entry cannot change
// under the reader. No entry gives an error wrapping io/fs.ErrNotExist; one
// whose trailer does not name v, or that is cut short, one wrapping
// ErrDisproved, and it is deleted (if it is still that version). The
// caller closes the entry.
func (b *Bucket) Open(ctx context.Context, v Version) (EntryReader, error) {
	key := b.EntryKey(v)
	info, err := b.objs.Head(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("shared cache entry of %s: %w", v.Key, err)
	}
	ectx, cancel := context.WithCancel(ctx)
	e := &bucketEntry{b: b, key: key, etag: info.ETag, v: v, ctx: ectx, cancel: cancel,
		chunks: map[int64]*chunk{}, read: make([]uint64, (v.Size/bucketChunk+64)/64)}
	e.blockSize, e.sums, err = readTrailer(pinnedReader{ctx, b.objs, key, info.ETag}, info.Size, v)
	if err != nil {
		cancel()
		if errors.Is(err, ErrDisproved) {
			err = errors.Join(err, e.Remove())
		}
		return nil, fmt.Errorf("shared cache entry of %s: %w", v.Key, err)
	}
	return e, nil
}

// Touch does nothing: a bucket tier is trimmed by the bucket's lifecycle
// rule, by age (README), and S3 has no access time to set.
func (b *Bucket) Touch(ctx context.Context, v Version) error { return nil }

// checkSums checks that sums has one checksum per block of v.
func checkSums(v Version, blockSize int64, sums []uint32) error {
	if blockSize <= 0 || int64(len(sums)) != (v.Size+blockSize-1)/blockSize {
		return fmt.Errorf("publish %s: %d checksums for %d bytes in blocks of %d", v.Key, len(sums), v.Size, blockSize)
	}
	return nil
}

// pinnedReader reads ranges of one version of an object.
type pinnedReader struct {
	ctx       context.Context
	objs      Objects
	key, etag string
}

func (r pinnedReader) ReadAt(p []byte, off int64) (int, error) {
	body, err := r.objs.GetRange(r.ctx, r.key, r.etag, off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer body.Close()
	return io.ReadFull(body, p)
}

// bucketEntry is an entry of a Bucket opened for reading. Its bytes are
// not proven. They are fetched in chunks of bucketChunk, each one ranged
// GET; a read fetches the chunk it needs and starts the next few
// (bucketAhead), so that a sequential reader, or several reading
// different parts at once, finds the next chunk fetched or in flight. A
// chunk is dropped once a read reaches its end (its reader moved on), or
// to make room: at most bucketChunks are kept.
type bucketEntry struct {
	// Set once in Open.
	b         *Bucket
	key, etag string
	v         Version
	blockSize int64
	sums      []uint32
	ctx       context.Context // the fetches'; cancel ends them
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the fetches

	mu     sync.Mutex       // guards the fields below and every chunk's users and used
	chunks map[int64]*chunk // by index (offset / bucketChunk)
	read   []uint64         // bit i: chunk i was read to its end, so is not fetched ahead again
	clock  int64            // counts uses, for chunk.used
	closed bool
}

// chunk is one ranged GET of an entry.
type chunk struct {
	buf    []byte             // its bytes, once done is closed and err is nil
	err    error              // set before done is closed
	done   chan struct{}      // closed when the fetch ended
	cancel context.CancelFunc // ends the fetch
	users  int                // reads waiting on it or copying from it
	used   int64              // bucketEntry.clock at its last use
	copied int64              // bytes copied out of it, by all reads
}

// ReadAt reads the object's bytes at off (the trailer is not part of
// them), io.EOF past them. It may be called concurrently.
func (e *bucketEntry) ReadAt(p []byte, off int64) (int, error) {
	if off >= e.v.Size {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), e.v.Size-off))
	n := 0
	for n < want {
		k, err := e.copyChunk(p[n:want], off+int64(n))
		n += k
		if err != nil {
			return n, fmt.Errorf("read shared cache entry of %s: %w", e.v.Key, err)
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// copyChunk copies into p what the chunk holding byte off has from off on.
func (e *bucketEntry) copyChunk(p []byte, off int64) (int, error) {
	idx := off / bucketChunk
	c, err := e.use(idx)
	if err != nil {
		return 0, err
	}
	select {
	case <-c.done:
	case <-e.ctx.Done():
		// The fetch may still be running: c.err is not ours to read.
		e.mu.Lock()
		c.users--
		e.mu.Unlock()
		return 0, e.ctx.Err()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	c.users--
	if c.err != nil {
		if e.chunks[idx] == c {
			delete(e.chunks, idx) // a later read tries again
		}
		return 0, c.err
	}
	n := copy(p, c.buf[off-idx*bucketChunk:])
	c.copied += int64(n)
	// Dropped once all of it was copied out, by however many readers
	// (parts copied in parallel need not start on a chunk's edge).
	if c.copied >= int64(len(c.buf)) {
		e.read[idx/64] |= 1 << (idx % 64)
		if c.users == 0 && e.chunks[idx] == c {
			delete(e.chunks, idx)
		}
	}
	return n, nil
}

// use returns chunk idx, fetched or in flight, counted as used, having
// started the fetch of the next bucketAhead ones where there is room.
func (e *bucketEntry) use(idx int64) (*chunk, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, iofs.ErrClosed
	}
	e.clock++
	for i := idx; i <= idx+bucketAhead && i*bucketChunk < e.v.Size; i++ {
		ahead := i > idx && (len(e.chunks) < bucketChunks && e.read[i/64]&(1<<(i%64)) == 0)
		if e.chunks[i] == nil && (i == idx || ahead) {
			if len(e.chunks) >= bucketChunks {
				e.evictLocked()
			}
			e.chunks[i] = e.fetch(i*bucketChunk, min(bucketChunk, e.v.Size-i*bucketChunk))
			e.chunks[i].used = e.clock
		}
	}
	c := e.chunks[idx]
	c.users++
	c.used = e.clock
	return c, nil
}

// evictLocked drops the chunk least recently used that no read is
// using, if any. e.mu is held.
func (e *bucketEntry) evictLocked() {
	victim := int64(-1)
	for i, c := range e.chunks {
		if c.users == 0 && (victim < 0 || c.used < e.chunks[victim].used) {
			victim = i
		}
	}
	if victim >= 0 {
		e.chunks[victim].cancel()
		delete(e.chunks, victim)
	}
}

// fetch starts the GET of n bytes at off.
func (e *bucketEntry) fetch(off, n int64) *chunk {
	ctx, cancel := context.WithCancel(e.ctx)
	c := &chunk{done: make(chan struct{}), cancel: cancel}
	e.wg.Go(func() {
		defer close(c.done)
		defer cancel()
		buf := make([]byte, n)
		// A body broken off midway is asked for again; another
		// version of the entry, or none, is final.
		for range 3 {
			_, c.err = pinnedReader{ctx, e.b.objs, e.key, e.etag}.ReadAt(buf, off)
			if c.err == nil || ctx.Err() != nil || errors.Is(c.err, index.ErrStale) || errors.Is(c.err, iofs.ErrNotExist) {
				break
			}
		}
		if c.err == nil {
			c.buf = buf
		}
	})
	return c
}

// Remove deletes the entry (one disproved) if it is still the version
// opened: another node's entry put under its name meanwhile stays, where
// the server honours If-Match on deletes (S3 and versitygw do).
func (e *bucketEntry) Remove() error {
	ctx, cancel := context.WithTimeout(context.Background(), removeTimeout)
	defer cancel()
	if err := e.b.objs.Delete(ctx, e.key, e.etag); err != nil && !errors.Is(err, index.ErrStale) {
		return fmt.Errorf("remove shared cache entry of %s: %w", e.v.Key, err)
	}
	return nil
}

// BlockSize is the block size the entry's checksums are of.
func (e *bucketEntry) BlockSize() int64 { return e.blockSize }

// Sums are the published CRC-32C of each block, as the publisher computed
// them: anyone who can write the tier can forge them.
func (e *bucketEntry) Sums() []uint32 { return e.sums }

// Close ends the fetches and waits for them.
func (e *bucketEntry) Close() error {
	e.mu.Lock()
	e.closed = true
	e.chunks = nil
	e.mu.Unlock()
	e.cancel()
	e.wg.Wait()
	return nil
}
