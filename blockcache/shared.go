package blockcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"s3cachefs/index"
)

// Tier is a store of whole object versions shared with other nodes
// (package tier implements it over a shared folder). The cache copies an
// object from it instead of fetching it from S3 when it holds none of the
// object's blocks, and publishes an object it fetched from S3 once every
// block is present. A prefetch (Warm) that finds no entry claims the
// object first, so that of the nodes prefetching it at once only one
// fetches it from S3. All methods may be called concurrently.
type Tier interface {
	// Provable reports whether bytes of obj from the tier can be proven
	// to be obj (by its ETag). Objects that cannot are neither copied
	// from the tier, nor claimed, nor published.
	Provable(obj index.Object) bool
	// Fill writes obj's bytes to w a block of blockSize at a time: each
	// WriteAt is one whole block (the last one short) at its offset,
	// once, in any order, possibly concurrently. It returns nil only if
	// it wrote every block and the bytes are proven to be obj (its
	// ETag). An error wrapping io/fs.ErrNotExist means the tier has no
	// usable entry of obj, and nothing was written; any other error
	// means the entry was refused or could not be read, and nothing
	// written may be used. An error from w is returned wrapped.
	Fill(ctx context.Context, obj index.Object, w io.WriterAt, blockSize int64) error
	// Publish stores obj for other nodes, read from r (exactly obj.Size
	// bytes), with the CRC-32C of each of its blocks of blockSize. It
	// may take long; the cache calls it in the background.
	Publish(ctx context.Context, obj index.Object, r io.Reader, blockSize int64, sums []uint32) error
	// Claim makes this node the one that fetches obj from S3 for the
	// nodes sharing the tier, until release is called (once it is
	// published, or the fetch failed) or the claim expires (the node
	// died). ok is false, with no error, when another node holds a live
	// claim; an error wrapping io/fs.ErrExist means the entry is there
	// now (fill from it); any other that claims do not work (fetch from
	// S3 all the same).
	Claim(ctx context.Context, obj index.Object) (release func(), ok bool, err error)
	// AwaitClaim returns once the claim another node holds on obj was
	// released or expired, or obj's entry appeared: then fill, or claim
	// again.
	AwaitClaim(ctx context.Context, obj index.Object) error
}

// ErrClaimed means another node sharing the tier is fetching the object
// from S3: WarmUnclaimed returns it rather than wait for that node.
var ErrClaimed = errors.New("being fetched by another node")

// errTierFallback ends a fill from the tier that did not record the object:
// its waiters start the usual fetches from S3. errTierMiss is the one for a
// tier without an entry: a prefetch then claims the object.
var (
	errTierFallback = errors.New("not filled from the shared tier")
	errTierMiss     = fmt.Errorf("%w: no entry", errTierFallback)
)

// publishQueue bounds the objects waiting to be published; more are
// dropped (counted), not waited for: publishing never holds up a fetch.
// publishers is how many are published at once.
const (
	publishQueue = 256
	publishers   = 4
)

// toPublish is an object queued for publishing, with the claim on it to
// release once it is published (or not).
type toPublish struct {
	obj     index.Object
	release func() // nil: not claimed
}

// tierFillLocked decides, with o.mu held, whether the fetch of o's parts is
// to be one fill from the tier: when there is a tier that can prove o, o
// has no block yet, and this is the first fetch of o in this run (or
// the first since retryTierLocked).
func (c *Cache) tierFillLocked(o *object) bool {
	// Only the very first fetch of o may fill: one before it may still
	// write and record parts.
	first := !o.tierTried && len(o.inflight) == 0
	o.tierTried = true
	return first && c.opts.Tier != nil && o.rec.Present.Count() == 0 && c.opts.Tier.Provable(o.obj)
}

// retryTierLocked lets the next fetch of o be a fill from the tier again,
// if o still has no block and no fetch: another node published it since.
// o.mu is held.
func (o *object) retryTierLocked() bool {
	if o.rec.Present.Count() > 0 || len(o.inflight) > 0 {
		return false
	}
	o.tierTried = false
	return true
}

// fillFromTier copies all of o from the tier into its cache file and
// records every block, or returns an error wrapping errTierFallback
// (having recorded nothing, and left nothing on disk) when the tier has no
// entry, refuses it, or the cache has no room. The cache's room is
// reserved only once the tier has an entry to copy.
func (c *Cache) fillFromTier(f *fetch, o *object) error {
	nblocks := o.rec.Present.Len()
	c.commits.expect()
	defer c.commits.arrived()
	if err := c.gate.acquire(c.ctx, isClosed(f.urgent), f.urgent); err != nil {
		return err
	}
	w := &blockWriter{c: c, o: o, sums: make([]uint32, nblocks)}
	err := c.opts.Tier.Fill(c.ctx, o.obj, w, c.opts.BlockSize)
	c.gate.release()
	if err == nil && w.blocks.Load() != nblocks {
		err = fmt.Errorf("%d of %d blocks", w.blocks.Load(), nblocks)
	}
	if err != nil {
		w.undo()
	}
	switch {
	case err == nil:
	case errors.Is(err, iofs.ErrNotExist):
		c.tierMisses.Add(1)
		return errTierMiss
	case c.ctx.Err() != nil:
		return err
	case errors.Is(err, ErrCacheFull):
		return fmt.Errorf("%w: %w", errTierFallback, err)
	default:
		c.tierRejected.Add(1)
		c.warnTierOnce(warnRefused, "shared cache entry not used; fetching from S3", "key", o.obj.Key, "err", err)
		return errTierFallback
	}
	defer func() { c.unreserve(c.missingUsage(o, 0, nblocks-1)) }() // what commit did not record
	o.mu.Lock()
	o.published = true // it is in the tier already
	o.mu.Unlock()
	if err := c.commit(o, 0, w.sums, f.urgent); err != nil {
		return err
	}
	c.tierBytes.Add(o.obj.Size)
	return nil
}

// blockWriter writes an object's blocks, each once, in any order and
// concurrently, to its cache file, and sums each. It reserves the object's
// room with its first block.
type blockWriter struct {
	c       *Cache
	o       *object
	sums    []uint32 // by block; each written by the one WriteAt of it
	blocks  atomic.Int64
	reserve sync.Once
	// reserved is the room reserved, and noRoom why it could not be:
	// set by reserve.
	reserved int64
	noRoom   error
	maxOff   atomic.Int64 // the end of the furthest block written
}

func (w *blockWriter) WriteAt(b []byte, off int64) (int, error) {
	w.reserve.Do(func() {
		need := w.c.missingUsage(w.o, 0, w.o.rec.Present.Len()-1)
		if w.noRoom = w.c.reserve(need); w.noRoom == nil {
			w.reserved = need
		}
	})
	if w.noRoom != nil {
		return 0, w.noRoom
	}
	bs := w.c.opts.BlockSize
	if off%bs != 0 || int64(len(b)) != min(bs, w.o.obj.Size-off) || off >= w.o.obj.Size {
		return 0, fmt.Errorf("%d bytes at %d are not one block of the object's %d", len(b), off, w.o.obj.Size)
	}
	if err := w.c.fault("write", w.o.id); err != nil {
		return 0, err
	}
	// Before the write: undo punches out what a short write took too.
	for end := off + int64(len(b)); ; {
		cur := w.maxOff.Load()
		if cur >= end || w.maxOff.CompareAndSwap(cur, end) {
			break
		}
	}
	if _, err := w.o.file.WriteAt(b, off); err != nil {
		return 0, w.c.noRoom(fmt.Errorf("write cache file: %w", err))
	}
	w.sums[off/bs] = blockSum(b)
	w.blocks.Add(1)
	return len(b), nil
}

// undo gives back what a fill that is not recorded took: the bytes it
// wrote (punched out of the cache file, so that they use no disk the cache
// does not count) and its reservation.
func (w *blockWriter) undo() {
	if end := w.maxOff.Load(); end > 0 {
		err := unix.Fallocate(int(w.o.file.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, end)
		if err != nil {
			w.c.log.Debug("free an unused fill from the shared cache", "key", w.o.obj.Key, "err", err)
		}
	}
	w.c.unreserve(w.reserved)
	w.reserved = 0
}

// claimForWarm is what Warm does with the tier before fetching o from S3:
// it copies o from the tier if it holds it; else it claims o, or, when
// another node holds the claim, waits for that node's entry (wait) or
// returns ErrClaimed. It returns nil once o is filled from the tier, or
// may be fetched from S3; won says that this call claimed o (o.claim is
// set), which its caller then releases unless the publisher took it.
// Trouble with the tier itself never fails it: o is then fetched from S3
// unclaimed.
func (c *Cache) claimForWarm(ctx context.Context, o *object, wait bool) (won bool, err error) {
	waited := false
	for round := 0; ; round++ {
		if round == maxClaimRounds {
			// A tier that keeps saying the claim is taken and gone.
			c.claimTrouble(o, fmt.Errorf("no claim after %d rounds", round))
			return false, nil
		}
		f := c.startFetch(o, 0, false)
		if f == nil || !f.fill {
			return false, nil // present, or fetched from S3 for a reader already
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return false, ctx.Err()
		}
		if !errors.Is(f.err, errTierMiss) {
			// Filled, refused (fetch it from S3), or failed.
			if errors.Is(f.err, errTierFallback) {
				return false, nil
			}
			return false, f.err
		}
		release, ok, err := c.opts.Tier.Claim(ctx, o.obj)
		switch {
		case err == nil && ok:
			c.claimsWon.Add(1)
			o.mu.Lock()
			o.claim = release
			o.mu.Unlock()
			return true, nil
		case errors.Is(err, iofs.ErrExist):
			// Published since the miss: copy it.
		case err == nil && !wait:
			c.retryTier(o)
			return false, fmt.Errorf("%s: %w", o.obj.Key, ErrClaimed)
		case err == nil:
			if !waited {
				c.claimsWaited.Add(1)
				waited = true
			}
			if err := c.opts.Tier.AwaitClaim(ctx, o.obj); err != nil {
				if ctx.Err() != nil {
					return false, ctx.Err()
				}
				c.claimTrouble(o, err)
				return false, nil
			}
		case ctx.Err() != nil:
			return false, ctx.Err()
		default:
			c.claimTrouble(o, err)
			return false, nil
		}
		if !c.retryTier(o) {
			return false, nil
		}
	}
}

// maxClaimRounds bounds claimForWarm's rounds of fill, claim and wait for
// one object: each waits for a claim that then went without an entry.
const maxClaimRounds = 100

// claimTrouble counts and logs (once) a claim that could not be made or
// waited for: o is fetched from S3 unclaimed.
func (c *Cache) claimTrouble(o *object, err error) {
	c.claimErrors.Add(1)
	c.warnTierOnce(warnTrouble, "shared cache claims do not work; fetching from S3 unclaimed", "key", o.obj.Key, "err", err)
}

// retryTier is retryTierLocked with o.mu taken.
func (c *Cache) retryTier(o *object) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.retryTierLocked()
}

// dropClaim releases the claim this node holds on o, if the publisher
// did not take it.
func (c *Cache) dropClaim(o *object) {
	o.mu.Lock()
	release := o.claim
	o.claim = nil
	o.mu.Unlock()
	if release != nil {
		release()
	}
}

// Kinds of trouble with the tier, each logged once at warning level
// (warnTierOnce): a tier that is down would log on every object. A tier
// unreachable, full or read-only fails claims and publishes alike: one
// warning says so.
const (
	warnRefused = iota // entries refused or unreadable
	warnTrouble        // claims or publishes that failed
	warnKinds
)

// warnTierOnce logs a warning of kind about the tier the first time, and
// at debug level after that.
func (c *Cache) warnTierOnce(kind int, msg string, args ...any) {
	if c.tierWarned[kind].CompareAndSwap(false, true) {
		c.log.Warn(msg, args...)
		return
	}
	c.log.Debug(msg, args...)
}

// notePublishLocked queues o for publishing once its last block is
// recorded, if it came from S3 and was not queued before; the claim on it,
// if any, goes with it. o.mu is held.
func (c *Cache) notePublishLocked(o *object) {
	if c.publishes == nil || o.published || o.rec.Present.Count() != o.rec.Present.Len() {
		return
	}
	o.published = true
	if !c.opts.Tier.Provable(o.obj) {
		return
	}
	item := toPublish{obj: o.obj, release: o.claim}
	o.claim = nil
	c.publishing.Add(1)
	select {
	case c.publishes <- item:
	default:
		c.publishing.Done()
		c.publishDropped.Add(1)
		if item.release != nil {
			// Not under o.mu: it works on the tier. This runs in a
			// fetch, so Close's wait covers it.
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				item.release()
			}()
		}
	}
}

// publisher publishes the objects queued until the cache closes. The
// claims of those left are released by Close (dropPublishes), once no
// fetch can queue more.
func (c *Cache) publisher() {
	defer c.flusher.Done()
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for {
				select {
				case item := <-c.publishes:
					c.publishOne(item)
				case <-c.ctx.Done():
					return
				}
			}
		})
	}
	wg.Wait()
}

// dropPublishes releases the claims of the objects still queued; Close
// calls it once every fetch and the publisher have ended.
func (c *Cache) dropPublishes() {
	if c.publishes == nil {
		return
	}
	for {
		select {
		case item := <-c.publishes:
			if item.release != nil {
				item.release()
			}
			c.publishing.Done()
		default:
			return
		}
	}
}

// publishOne publishes one queued object and releases its claim.
func (c *Cache) publishOne(item toPublish) {
	switch done, err := c.publish(item.obj); {
	case err != nil && c.ctx.Err() != nil:
		// Cut short by Close.
	case err != nil:
		c.publishErrors.Add(1)
		c.warnTierOnce(warnTrouble, "publish to the shared cache", "key", item.obj.Key, "err", err)
	case done:
		c.published.Add(1)
	}
	if item.release != nil {
		item.release()
	}
	c.publishing.Done()
}

// publish hands obj's cache file to the tier, each block checked against
// its recorded sum as it is read: a block changed on SSD is not published.
// An object evicted meanwhile is skipped: done is false.
func (c *Cache) publish(obj index.Object) (done bool, err error) {
	id := ObjectID(c.opts.Bucket, obj)
	rec, ok, err := c.db.Record(id)
	if err != nil || !ok || rec.Present.Count() != rec.Present.Len() {
		return false, err
	}
	file, err := os.Open(objectPath(c.opts.Dir, id))
	if errors.Is(err, iofs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer file.Close()
	r := &checkedReader{file: file, size: obj.Size, bs: c.opts.BlockSize, sums: rec.Sums}
	return true, c.opts.Tier.Publish(c.ctx, obj, r, c.opts.BlockSize, rec.Sums)
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
