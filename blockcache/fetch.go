package blockcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"s3cachefs/index"
)

// object is one object version in use: its cache file, its presence
// record and the fetches in flight for it.
type object struct {
	// Set once: id and obj in acquire, file and loadErr by the loader
	// before it closes ready; read them only after ready is closed.
	id      string
	obj     index.Object
	ready   chan struct{}
	file    *os.File
	loadErr error
	// dropping marks a placeholder of evictIDs: the object is being
	// evicted, and whoever waits on it opens it afresh.
	dropping bool

	// refs is guarded by Cache.mu: handles plus running fetches.
	refs int

	mu       sync.Mutex   // guards rec, verified, stamp and inflight
	rec      index.Record // what the index holds for id
	verified index.Blocks // blocks checked against their sums this run
	// stamp is the cache file's state in which the blocks of verified
	// were known to match it: after the cache's own last write, or after
	// Backing checked every block. Backing checks every block again when
	// the file is no longer in that state (see stamp.go).
	stamp    fileStamp
	inflight map[int64]*fetch // fetches by part number
	// fresh holds blocks just fetched for a reader (fresh.go); guarded
	// by mu, and by c.mu alone once refs is 0.
	fresh map[int64]freshBlock
	// handles counts the open Handles of o: blocks fetched meanwhile
	// are kept for them (fresh.go).
	handles atomic.Int32
	// curClaim is made by the commit that records the object as its
	// key's current version and closed once it has (or failed; then it
	// is nil again and the next commit tries), curSet once it has: both
	// guarded by mu (versions.go).
	curClaim chan struct{}
	curSet   bool

	// superseded is set when a newer version of the key was cached while
	// this one was in use; the last release drops this one's data.
	superseded atomic.Bool

	// tierTried is set once a fill from the shared tier was started, and
	// published once o was queued for publishing (or came from the
	// tier); claim releases this node's claim on o in the tier, until it
	// goes with o to the publisher: all guarded by mu (shared.go).
	tierTried, published bool
	claim                func()
}

// fetch is one ranged GET of a part, shared by every reader waiting on it.
type fetch struct {
	done    chan struct{} // closed when err is set
	err     error
	urgent  chan struct{} // closed once a reader waits on the fetch
	promote sync.Once     // closes urgent
	fill    bool          // set once: a fill of the whole object from the tier
}

// makeUrgent moves the fetch ahead of background fetches.
func (f *fetch) makeUrgent() {
	f.promote.Do(func() { close(f.urgent) })
}

// blockSpan returns the blocks [first, last] that hold bytes [off, end).
func (c *Cache) blockSpan(off, end int64) (first, last int64) {
	return off / c.opts.BlockSize, (end - 1) / c.opts.BlockSize
}

// partOf returns the part number that holds block b.
func (c *Cache) partOf(b int64) int64 {
	return b / (c.opts.PartSize / c.opts.BlockSize)
}

// missingLocked reports whether any block in [first, last] is not
// present; o.mu is held.
func (o *object) missingLocked(first, last int64) bool {
	if o.rec.Present.Full() {
		return false
	}
	for b := first; b <= last; b++ {
		if !o.rec.Present.Has(b) {
			return true
		}
	}
	return false
}

// ensure makes blocks [first, last] of o present, fetching the parts that
// lack any and waiting for them. It reports whether it had to wait.
// Cancelling ctx stops the wait, not the fetches.
func (c *Cache) ensure(ctx context.Context, o *object, first, last int64) (bool, error) {
	return c.await(ctx, o, first, last, true)
}

// await starts or joins the fetches of the parts holding blocks [first,
// last] and waits for them. urgent fetches go before background ones.
// A fill from the shared tier that did not record the object
// (errTierFallback) is followed by the usual fetches.
func (c *Cache) await(ctx context.Context, o *object, first, last int64, urgent bool) (bool, error) {
	waited := false
	for {
		var waits []*fetch
		for p := c.partOf(first); p <= c.partOf(last); p++ {
			if f := c.startFetch(o, p, urgent); f != nil {
				waits = append(waits, f)
			}
		}
		again := false
		for _, f := range waits {
			select {
			case <-f.done:
				switch {
				case errors.Is(f.err, errTierFallback):
					again = true
				case f.err != nil:
					return true, f.err
				}
			case <-ctx.Done():
				return true, ctx.Err()
			}
		}
		waited = waited || len(waits) > 0
		if !again {
			return waited, nil
		}
	}
}

// startFetch starts (or joins) the fetch of part p of o and returns it, or
// returns nil when every block of the part is already present. An urgent
// caller promotes a background fetch it joins.
func (c *Cache) startFetch(o *object, p int64, urgent bool) *fetch {
	per := c.opts.PartSize / c.opts.BlockSize
	first := p * per
	last := min(first+per, o.rec.Present.Len()) - 1
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.missingLocked(first, last) {
		return nil
	}
	if f, ok := o.inflight[p]; ok {
		if urgent {
			f.makeUrgent()
			c.commits.hurry() // its add may be waiting in a gathering batch
		}
		return f
	}
	f := &fetch{done: make(chan struct{}), urgent: make(chan struct{})}
	if urgent {
		f.makeUrgent()
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		f.err = ErrClosed
		close(f.done)
		return f
	}
	o.refs++ // the fetch keeps the file open until it is done
	c.wg.Add(1)
	c.mu.Unlock()
	parts := []int64{p}
	fill := c.tierFillLocked(o)
	if fill {
		// One fill of the whole object from the tier: every part waits
		// on it.
		parts = parts[:0]
		for q := int64(0); q <= c.partOf(o.rec.Present.Len()-1); q++ {
			parts = append(parts, q)
		}
	}
	f.fill = fill
	for _, q := range parts {
		o.inflight[q] = f
	}
	go func() {
		defer c.wg.Done()
		if fill {
			f.err = c.fillFromTier(f, o)
		} else {
			f.err = c.fetchPart(f, o, first, last)
		}
		o.mu.Lock()
		for _, q := range parts {
			delete(o.inflight, q)
		}
		o.mu.Unlock()
		// Let go of the file before waking the waiters: once a reader
		// is back, only handles hold the object (eviction may count on it).
		c.release(o)
		close(f.done)
	}()
	return f
}

// fetchPart downloads the missing blocks of [first, last], retrying a body
// that fails midway from the first block still missing, within the budget
// above. The gate is held for each GET, not across the waits between them.
func (c *Cache) fetchPart(f *fetch, o *object, first, last int64) error {
	var err error
	retries := bodyRetries{limit: c.opts.BodyAttempts}
	for {
		if err = c.gate.acquire(c.ctx, isClosed(f.urgent), f.urgent); err != nil {
			return err
		}
		var got int64
		var once sync.Once
		release := func() { once.Do(c.gate.release) }
		got, err = c.fetchRange(o, first, last, f.urgent, release)
		release()
		if c.ctx.Err() != nil {
			break
		}
		again, final := retries.next(err, got)
		if !again {
			err = final
			break
		}
		c.log.Warn("fetch cut short; retrying", "key", o.obj.Key, "attempt", retries.attempt,
			"blocks_got", got, "err", err)
		if err := retries.wait(c.ctx); err != nil {
			return err
		}
	}
	switch {
	case errors.Is(err, ErrCacheFull):
		c.log.Debug("no room to cache", "key", o.obj.Key, "first_block", first)
	case err != nil:
		c.fetchErrs.Add(1)
		c.log.Warn("fetch failed", "key", o.obj.Key, "first_block", first, "err", err)
	}
	return err
}

// fetchRange fetches blocks [first, last] (trimmed to the ones missing at
// the ends), writes them to the cache file past the page cache (direct.go),
// makes them durable and records them, and returns how many it recorded;
// blocks a reader is about to take are also kept in memory (fresh.go).
// It calls bodyDone once the body
// is read: the gate bounds GETs, and the fsync and index commit that follow
// need no connection, so the next GET may start meanwhile. urgent is the
// fetch's promotion channel, for the group commit. Blocks written before a failure
// are still made durable and recorded; a failure of the body wraps
// *bodyError.
func (c *Cache) fetchRange(o *object, first, last int64, urgent <-chan struct{}, bodyDone func()) (int64, error) {
	o.mu.Lock()
	for first <= last && o.rec.Present.Has(first) {
		first++
	}
	for last >= first && o.rec.Present.Has(last) {
		last--
	}
	o.mu.Unlock()
	if first > last {
		return 0, nil
	}
	// A background commit gathers adds while fetches like this one are
	// on their way (groupcommit.go).
	c.commits.expect()
	defer c.commits.arrived()
	if err := c.reserve(c.missingUsage(o, first, last)); err != nil {
		return 0, err
	}
	// Give back the room of blocks this fetch did not record. Only this
	// fetch records blocks of [first, last]: fetches are per part.
	defer func() { c.unreserve(c.missingUsage(o, first, last)) }()
	bs := c.opts.BlockSize
	off := first * bs
	end := min((last+1)*bs, o.obj.Size)
	start := time.Now()
	body, err := c.src.GetRange(c.ctx, o.obj.Key, o.obj.ETag, off, end-off)
	if err != nil {
		c.onFetch(0, start, err)
		return 0, fmt.Errorf("get %s bytes %d-%d: %w", o.obj.Key, off, end-1, err)
	}
	w := c.newWriter(o)
	sums, copyErr := c.copyBlocks(o, body, first, last, w)
	if err := w.Close(); err != nil && copyErr == nil {
		copyErr = fmt.Errorf("close cache file: %w", err)
	}
	body.Close()
	bodyDone()
	// Count and report the GET before its blocks are recorded: once they
	// are, a reader may return, and its caller may look at the figures.
	if copyErr == nil {
		c.fetches.Add(1)
	}
	c.onFetch(min((first+int64(len(sums)))*bs, end)-off, start, copyErr)
	if len(sums) > 0 {
		if err := c.commit(o, first, sums, urgent); err != nil {
			return 0, err
		}
	}
	got := int64(len(sums))
	if copyErr != nil {
		return got, fmt.Errorf("read %s bytes %d-%d: %w", o.obj.Key, off, end-1, copyErr)
	}
	return got, nil
}

// copyBlocks writes whole blocks from body through w into the cache file
// starting at block first, and returns the CRC-32C of each block written
// in full. A block written while a reader has o open stays in memory for
// it, within the bound; where each block goes is fresh.go's table.
func (c *Cache) copyBlocks(o *object, body io.Reader, first, last int64, w *directWriter) ([]uint32, error) {
	bs := c.opts.BlockSize
	pb := c.blocks.Get().(*[]byte)
	defer func() { c.blocks.Put(pb) }()
	var sums []uint32
	for b := first; b <= last; b++ {
		n := min(bs, o.obj.Size-b*bs)
		buf := *pb
		if _, err := io.ReadFull(body, buf[:n]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return sums, &bodyError{err}
		}
		keep := c.reserveFresh(o)
		if err := c.writeBlock(o, w, buf[:n], b*bs, keep); err != nil {
			if keep {
				c.unreserveFresh()
			}
			return sums, err
		}
		c.fromS3.Add(n)
		sums = append(sums, blockSum(buf[:n]))
		if keep {
			c.keepFresh(o, b, pb, int(n))
			pb = c.blocks.Get().(*[]byte)
		}
	}
	return sums, nil
}

// writeBlock writes one fetched block at off: past the page cache if a
// reader takes it from memory (kept) or nobody has o open, else through
// it, since a reader will read it back soon.
func (c *Cache) writeBlock(o *object, w *directWriter, p []byte, off int64, kept bool) error {
	if err := c.fault("write", o.id); err != nil {
		return err
	}
	write := w.file.WriteAt
	if kept || o.handles.Load() == 0 {
		write = w.WriteAt
	}
	if _, err := write(p, off); err != nil {
		return c.noRoom(fmt.Errorf("write cache file: %w", err))
	}
	return nil
}

// commit makes the blocks from first durable, then records them with
// their checksums through the group commit, urgently once urgent is
// closed. Only after both are they served.
func (c *Cache) commit(o *object, first int64, sums []uint32, urgent <-chan struct{}) error {
	n := int64(len(sums))
	if err := c.fault("sync", o.id); err != nil {
		return err
	}
	c.syncs.Add(1)
	if err := unix.Fdatasync(int(o.file.Fd())); err != nil {
		// Delayed allocation can report a full disk only here.
		return c.noRoom(fmt.Errorf("sync cache file: %w", err))
	}
	st, err := stampOf(o.file)
	if err != nil {
		return err
	}
	if err := c.fault("record", o.id); err != nil {
		return err
	}
	o.mu.Lock()
	base := o.rec
	base.Present = index.Blocks{} // the index reads presence from its record
	// The first commit of o also records it as its key's current version
	// (in the same transaction); the others wait for that below.
	claim, mine := o.claimCurrentLocked()
	p := c.commits.enqueue(index.BlockAdd{Rec: base, First: first, Sums: sums, Current: mine}, urgent)
	o.mu.Unlock()
	res := c.commits.wait(p)
	if mine {
		c.madeCurrent(o, claim, res)
	}
	if res.Err != nil {
		return fmt.Errorf("record blocks: %w", res.Err)
	}
	// Set the bits rather than take the stored record: fetches of other
	// parts may have committed since, and presence only ever grows.
	o.mu.Lock()
	if o.rec.LastAccess.IsZero() {
		// A new record: the index dated it (its place in eviction's order).
		o.rec.LastAccess = res.Stored.LastAccess
	}
	if o.rec.Sums == nil {
		o.rec.Sums = make([]uint32, o.rec.Present.Len())
	}
	if o.verified.Len() == 0 {
		o.verified = index.NewBlocks(o.rec.Present.Len())
	}
	for b := first; b < first+n; b++ {
		o.rec.Present.Set(b)
		o.rec.Sums[b] = sums[b-first]
		o.verified.Set(b) // written from the bytes just summed
	}
	o.noteWrittenLocked(st)
	c.notePublishLocked(o)
	o.mu.Unlock()
	// Every committer waits until the first has made o current (and
	// dropped the version it replaces), so no reader returns before the
	// old bytes are gone.
	if claim != nil && !mine {
		<-claim
	}
	return nil
}

// onFetch reports one ranged GET, started at start, to Options.OnFetch.
func (c *Cache) onFetch(bytes int64, start time.Time, err error) {
	if c.opts.OnFetch != nil {
		c.opts.OnFetch(bytes, time.Since(start), err)
	}
}

func (c *Cache) fault(point, id string) error {
	if c.opts.Fault == nil {
		return nil
	}
	return c.opts.Fault(point, id)
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
