package blockcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"

	"s3cachefs/index"
)

// Tier is a store of whole object versions shared with other nodes
// (package tier implements it over a shared folder). The cache copies an
// object from it instead of fetching it from S3 when it holds none of the
// object's blocks, and publishes an object it fetched from S3 once every
// block is present. Both methods may be called concurrently.
type Tier interface {
	// Fill writes obj's bytes to w, in order from offset 0, and returns
	// nil only if it wrote all obj.Size of them and they are proven to
	// be obj (its ETag). An error wrapping io/fs.ErrNotExist means the
	// tier has no usable entry of obj (none, or one that cannot be
	// proven); any other error means the entry was refused or could not
	// be read, and nothing written may be used. An error from w is
	// returned as it is.
	Fill(ctx context.Context, obj index.Object, w io.Writer) error
	// Publish stores obj for other nodes, read from r (exactly obj.Size
	// bytes), with the CRC-32C of each of its blocks of blockSize. It may
	// take long; the cache calls it in the background.
	Publish(ctx context.Context, obj index.Object, r io.Reader, blockSize int64, sums []uint32) error
}

// errTierFallback ends a fill from the tier that did not record the object:
// its waiters start the usual fetches from S3.
var errTierFallback = errors.New("not filled from the shared tier")

// publishQueue bounds the objects waiting to be published; more are
// dropped (counted), not waited for: publishing never holds up a fetch.
const publishQueue = 256

// tierFillLocked decides, with o.mu held, whether the fetch of o's parts is
// to be one fill from the tier: when there is a tier, o has no block yet and
// no fill of it was tried in this run.
func (c *Cache) tierFillLocked(o *object) bool {
	if c.opts.Tier == nil || o.tierTried || o.rec.Present.Count() > 0 || o.obj.ETag == "" {
		return false
	}
	o.tierTried = true
	return true
}

// fillFromTier copies all of o from the tier into its cache file and
// records every block, or returns errTierFallback (having recorded
// nothing) when the tier has no entry, refuses it, or the cache has no room.
func (c *Cache) fillFromTier(f *fetch, o *object) error {
	nblocks := o.rec.Present.Len()
	c.commits.expect()
	defer c.commits.arrived()
	need := c.missingUsage(o, 0, nblocks-1)
	if err := c.reserve(need); err != nil {
		return errTierFallback
	}
	defer func() { c.unreserve(c.missingUsage(o, 0, nblocks-1)) }()
	if err := c.gate.acquire(c.ctx, isClosed(f.urgent), f.urgent); err != nil {
		return err
	}
	w := &blockWriter{c: c, o: o, buf: c.blocks.Get().(*[]byte)}
	err := c.opts.Tier.Fill(c.ctx, o.obj, w)
	c.gate.release()
	c.blocks.Put(w.buf)
	if err == nil && int64(len(w.sums)) != nblocks {
		err = fmt.Errorf("%d of %d blocks", len(w.sums), nblocks)
	}
	switch {
	case err == nil:
	case errors.Is(err, iofs.ErrNotExist):
		c.tierMisses.Add(1)
		return errTierFallback
	case c.ctx.Err() != nil:
		return err
	default:
		c.tierRejected.Add(1)
		c.log.Warn("shared cache entry not used; fetching from S3", "key", o.obj.Key, "err", err)
		return errTierFallback
	}
	o.mu.Lock()
	o.published = true // it is in the tier already
	o.mu.Unlock()
	if err := c.commit(o, 0, w.sums, f.urgent); err != nil {
		return err
	}
	c.tierBytes.Add(o.obj.Size)
	return nil
}

// blockWriter writes an object's bytes, arriving in order, to its cache
// file a block at a time, and sums each block.
type blockWriter struct {
	c    *Cache
	o    *object
	buf  *[]byte // one block
	n    int     // bytes of the current block in buf
	off  int64   // where the current block starts
	sums []uint32
}

func (w *blockWriter) Write(p []byte) (int, error) {
	bs := w.c.opts.BlockSize
	total := len(p)
	for len(p) > 0 {
		blockLen := int(min(bs, w.o.obj.Size-w.off))
		if blockLen <= 0 {
			return total - len(p), fmt.Errorf("more than the object's %d bytes", w.o.obj.Size)
		}
		k := copy((*w.buf)[w.n:blockLen], p)
		w.n += k
		p = p[k:]
		if w.n == blockLen {
			b := (*w.buf)[:blockLen]
			if err := w.c.fault("write", w.o.id); err != nil {
				return total - len(p), err
			}
			if _, err := w.o.file.WriteAt(b, w.off); err != nil {
				return total - len(p), w.c.noRoom(fmt.Errorf("write cache file: %w", err))
			}
			w.sums = append(w.sums, blockSum(b))
			w.off += int64(blockLen)
			w.n = 0
		}
	}
	return total, nil
}

// notePublishLocked queues o for publishing once its last block is
// recorded, if it came from S3 and was not queued before. o.mu is held.
func (c *Cache) notePublishLocked(o *object) {
	if c.publishes == nil || o.published || o.rec.Present.Count() != o.rec.Present.Len() {
		return
	}
	o.published = true
	c.publishing.Add(1)
	select {
	case c.publishes <- o.obj:
	default:
		c.publishing.Done()
		c.publishDropped.Add(1)
	}
}

// publisher publishes the objects queued, one at a time, until the cache
// closes.
func (c *Cache) publisher() {
	defer c.flusher.Done()
	for {
		select {
		case obj := <-c.publishes:
			if err := c.publish(obj); err != nil {
				c.publishErrors.Add(1)
				c.log.Warn("publish to the shared cache", "key", obj.Key, "err", err)
			} else {
				c.published.Add(1)
			}
			c.publishing.Done()
		case <-c.ctx.Done():
			return
		}
	}
}

// publish hands obj's cache file to the tier, each block checked against
// its recorded sum as it is read: a block changed on SSD is not published.
// An object evicted meanwhile is skipped.
func (c *Cache) publish(obj index.Object) error {
	id := ObjectID(c.opts.Bucket, obj)
	rec, ok, err := c.db.Record(id)
	if err != nil || !ok || rec.Present.Count() != rec.Present.Len() {
		return err
	}
	file, err := os.Open(objectPath(c.opts.Dir, id))
	if errors.Is(err, iofs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer file.Close()
	r := &checkedReader{file: file, size: obj.Size, bs: c.opts.BlockSize, sums: rec.Sums}
	return c.opts.Tier.Publish(c.ctx, obj, r, c.opts.BlockSize, rec.Sums)
}

// checkedReader reads a cache file a block at a time, each checked against
// its sum.
type checkedReader struct {
	file *os.File
	size int64
	bs   int64
	sums []uint32
	off  int64
	buf  []byte // the rest of the block read last
}

func (r *checkedReader) Read(p []byte) (int, error) {
	if len(r.buf) == 0 {
		if r.off >= r.size {
			return 0, io.EOF
		}
		b := r.off / r.bs
		block := make([]byte, min(r.bs, r.size-r.off))
		if _, err := r.file.ReadAt(block, r.off); err != nil {
			return 0, fmt.Errorf("read cache file: %w", err)
		}
		if blockSum(block) != r.sums[b] {
			return 0, fmt.Errorf("block %d: %w", b, ErrCorrupt)
		}
		r.buf, r.off = block, r.off+int64(len(block))
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}
