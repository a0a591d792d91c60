package blockcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"s3cachefs/index"
)

// Defaults for Options.
const (
	DefaultBlockSize  = 1 << 20
	DefaultPartSize   = 4 << 20
	DefaultMaxFetches = 16
	DefaultReadAhead  = 64 << 20
)

// Options configures a Cache. Zero fields take the defaults above.
type Options struct {
	// Dir is the cache directory; cache files go under Dir/objects.
	Dir string
	// Bucket is part of every cache file's identity.
	Bucket string
	// BlockSize is the unit of presence bookkeeping.
	BlockSize int64
	// PartSize is the most bytes one ranged GET asks for; it is rounded up
	// to a multiple of BlockSize.
	PartSize int64
	// MaxFetches bounds the ranged GETs in flight across the cache.
	MaxFetches int
	// ReadAhead is the largest read-ahead window of a sequential reader;
	// negative turns read-ahead off.
	ReadAhead int64
	// MaxBytes is the most SSD space cached blocks may take (rounded to
	// filesystem blocks); 0 means no limit.
	MaxBytes int64
	// MinFree is how many bytes must stay free on the cache filesystem.
	MinFree int64
	// BodyAttempts bounds the GETs of one part (or one uncached read)
	// whose body broke off without bringing anything new; a body that
	// brought blocks does not count. 0 means DefaultBodyAttempts.
	BodyAttempts int
	// Fault, when set, is called at the named points "write", "sync" and
	// "record" of every fetch; a non-nil error fails the fetch there. It
	// lets tests prove that nothing unproven is ever recorded or served.
	Fault func(point, id string) error
	// OnFetch, when set, is called after every ranged GET that fills the
	// cache, with the bytes written from its body, the time from sending
	// the request to the end of the body (or the failure), and the error
	// that cut it short, if any. It lets the daemon keep latency and
	// size histograms without this package knowing about metrics. It is
	// called from fetch goroutines, concurrently, and must return quickly.
	OnFetch func(bytes int64, d time.Duration, err error)
	// Eviction is what a full cache does; the zero value is EvictLRU.
	Eviction Eviction
	// Tier, if set, is the shared tier (shared.go): objects of which
	// nothing is cached are copied from it when it holds them, and
	// objects fetched from S3 are published to it once complete.
	Tier Tier
	// Logger receives fetch failures; nil discards.
	Logger *slog.Logger
}

// Eviction is a full cache's policy.
type Eviction int

const (
	// EvictLRU makes room for a fetch by evicting the least recently
	// opened objects that are neither pinned nor open.
	EvictLRU Eviction = iota
	// EvictNone evicts nothing to make room: once the cache is full it
	// keeps what it has, and reads of what it lacks go to S3 uncached. An
	// epoch that reads every file once, over a dataset larger than the
	// cache, then hits on the cached share every epoch, where LRU would
	// evict each file before its next read.
	EvictNone
)

func (o *Options) setDefaults() {
	if o.BlockSize <= 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.PartSize <= 0 {
		o.PartSize = DefaultPartSize
	}
	o.PartSize = (o.PartSize + o.BlockSize - 1) / o.BlockSize * o.BlockSize
	if o.MaxFetches <= 0 {
		o.MaxFetches = DefaultMaxFetches
	}
	if o.ReadAhead == 0 {
		o.ReadAhead = DefaultReadAhead
	}
	if o.BodyAttempts <= 0 {
		o.BodyAttempts = DefaultBodyAttempts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Stats are the cache's counters since New.
type Stats struct {
	Hits         int64 // reads served entirely from blocks already on SSD
	Misses       int64 // reads that waited for at least one fetch
	BytesFromS3  int64 // bytes downloaded into the cache
	BytesFromSSD int64 // bytes returned by reads that were hits
	Fetches      int64 // ranged GETs whose body was read in full (recording their blocks may still fail)
	FetchErrors  int64 // fetches that failed
	OpenObjects  int   // object versions with open handles or fetches
	UsedBytes    int64 // SSD space of cached blocks, as the limit counts it
	Evictions    int64 // objects evicted to make room
	Uncached     int64 // reads served from S3 because the cache was full
	Full         bool  // the cache could not make room for the last fetch
	Corrupt      int64 // cached blocks found damaged on read (and fetched again)
	// BlocksChecked counts blocks read back from SSD and compared with
	// their sums: by every read served from SSD, and before a complete
	// file is handed to the kernel.
	BlocksChecked int64
	// BlocksFresh counts blocks served from memory right after their
	// fetch, neither read back nor checked again (fresh.go).
	BlocksFresh int64
	// Syncs counts fdatasyncs of cache files: one per part fetched (or
	// per body retry), before its blocks are recorded.
	Syncs int64
	// The shared tier: bytes of objects copied from it; objects it did
	// not hold, and entries it held that were refused (not proven to be
	// the object, or unreadable), both then fetched from S3; objects
	// published to it, publishes that failed, and objects not queued for
	// publishing because the queue was full.
	TierBytes, TierMisses, TierRejected, Published, PublishErrors, PublishDropped int64
	// Claims in the tier by prefetches: won (this node fetched the
	// object from S3 for all), waited for (another node was fetching
	// it), and failed (claims do not work: fetched unclaimed).
	ClaimsWon, ClaimsWaited, ClaimErrors int64
}

// Cache is the SSD store. Create it with New and stop it with Close.
type Cache struct {
	// Set once in New.
	db     *index.DB
	src    Source
	opts   Options
	log    *slog.Logger
	ctx    context.Context // lifetime of fetches; cancelled by Close
	cancel context.CancelFunc
	gate   *gate // bounds the GETs in flight; reads go first
	// commits records fetched blocks, many fetches per index transaction.
	commits *groupCommit
	wg      sync.WaitGroup // fetches in flight
	// blocks recycles block-sized buffers (*[]byte): every fetch and
	// check needs one, and allocating 1 MiB each time costs zeroing and
	// garbage collection on the busiest path.
	blocks sync.Pool

	mu   sync.Mutex         // guards objs, checked and closed
	objs map[string]*object // object versions in use, by ID
	// checked keeps, for object versions no longer in use, which blocks
	// were checked against their sums in this run, so that reopening a
	// file does not read it back again (and a complete, checked file can
	// be handed to the kernel at once).
	checked    map[string]checkedState
	maxChecked int // bound of checked; maxChecked but for tests
	// closed is set by Close; Open fails afterwards.
	closed bool

	flusher sync.WaitGroup       // flushTouches; ends at Close
	touchMu sync.Mutex           // guards touches
	touches map[string]time.Time // access times not yet written, by ID

	evictMu sync.Mutex // serialises reservations and eviction; guards memo
	memo    evictMemo  // where the last eviction round stopped (evict.go)
	// memoTime is memo's LastAccess in Unix nanoseconds (MinInt64: none),
	// read without evictMu by the touch flusher.
	memoTime atomic.Int64
	// releases counts last releases of objects that sort before memo
	// (and access times written behind it): a record eviction found in
	// use may be evictable since.
	releases atomic.Uint64
	used     atomic.Int64 // SSD bytes of recorded blocks plus reservations
	full     atomic.Bool  // the last reservation failed
	// noDirect is set once the cache filesystem refused O_DIRECT.
	noDirect atomic.Bool
	// heldBlocks counts the blocks open handles hold between reads
	// (Handle.held); holdOne bounds it.
	heldBlocks atomic.Int64
	// freshBlocks counts the blocks objects keep for readers (fresh.go);
	// keepFresh bounds it.
	freshBlocks atomic.Int64

	hits, misses, fromS3, fromSSD, fetches, fetchErrs, evictions, uncached, corrupt, checks, freshServed, syncs atomic.Int64

	// The shared tier (shared.go); publishes is nil without one.
	publishes                                                                     chan toPublish // objects to publish, for publisher
	publishing                                                                    sync.WaitGroup // objects queued and not yet published (or failed)
	tierBytes, tierMisses, tierRejected, published, publishErrors, publishDropped atomic.Int64
	claimsWon, claimsWaited, claimErrors                                          atomic.Int64
	tierWarned                                                                    [warnKinds]atomic.Bool // warnTierOnce warned, by kind
}

// ErrClosed is returned by Open after Close.
var ErrClosed = errors.New("cache is closed")

// ErrCorrupt means a cache file does not hold what its record says.
var ErrCorrupt = errors.New("cache file is damaged")

// New returns a Cache that keeps its files under opts.Dir, records block
// presence in db and fetches from src.
func New(db *index.DB, src Source, opts Options) (*Cache, error) {
	opts.setDefaults()
	if opts.Dir == "" {
		return nil, errors.New("blockcache: no cache directory")
	}
	if err := os.MkdirAll(FilesDir(opts.Dir), 0o700); err != nil {
		return nil, fmt.Errorf("create cache directory: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cache{
		db: db, src: src, opts: opts, log: opts.Logger,
		ctx: ctx, cancel: cancel,
		gate:    newGate(opts.MaxFetches),
		commits: newGroupCommit(db),
		objs:    make(map[string]*object),
		checked: make(map[string]checkedState), maxChecked: maxChecked,
		touches: make(map[string]time.Time),
	}
	c.memoTime.Store(math.MinInt64)
	if err := c.loadUsage(); err != nil {
		cancel()
		return nil, fmt.Errorf("read cache usage: %w", err)
	}
	c.blocks.New = func() any {
		b := alignedBlock(opts.BlockSize) // O_DIRECT writes from it
		return &b
	}
	c.flusher.Add(1)
	go c.flushTouches()
	if opts.Tier != nil {
		c.publishes = make(chan toPublish, publishQueue)
		c.flusher.Add(1)
		go c.publisher()
	}
	return c, nil
}

// Close cancels fetches in flight, waits for them and closes every cache
// file. Handles still open fail their reads afterwards.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.flusher.Wait() // after its last flush
	c.dropPublishes()
	c.mu.Lock()
	objs := c.objs
	c.objs = make(map[string]*object)
	c.mu.Unlock()
	var errs []error
	for _, o := range objs {
		<-o.ready // a load in progress finishes first
		if o.file != nil {
			errs = append(errs, o.file.Close())
		}
	}
	return errors.Join(errs...)
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	n := len(c.objs)
	c.mu.Unlock()
	return Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load(),
		BytesFromS3: c.fromS3.Load(), BytesFromSSD: c.fromSSD.Load(),
		Fetches: c.fetches.Load(), FetchErrors: c.fetchErrs.Load(),
		OpenObjects: n,
		UsedBytes:   c.used.Load(), Evictions: c.evictions.Load(),
		Uncached: c.uncached.Load(), Full: c.full.Load(), Corrupt: c.corrupt.Load(),
		BlocksChecked: c.checks.Load(),
		BlocksFresh:   c.freshServed.Load(), Syncs: c.syncs.Load(),
		TierBytes: c.tierBytes.Load(), TierMisses: c.tierMisses.Load(), TierRejected: c.tierRejected.Load(),
		Published: c.published.Load(), PublishErrors: c.publishErrors.Load(), PublishDropped: c.publishDropped.Load(),
		ClaimsWon: c.claimsWon.Load(), ClaimsWaited: c.claimsWaited.Load(), ClaimErrors: c.claimErrors.Load(),
	}
}

// Open returns a handle for reading obj. The handle must be closed.
func (c *Cache) Open(ctx context.Context, obj index.Object) (*Handle, error) {
	o, err := c.acquire(obj)
	if err != nil {
		return nil, err
	}
	c.touch(o)
	o.handles.Add(1)
	return &Handle{c: c, o: o}, nil
}

// touchEvery is how stale a recorded access time may get before an open
// rewrites it: eviction needs recency, not a write per open. It is short
// because the cache may turn over in less than a minute (a full cache of
// small files, read by many trainers): a file opened every second must
// never look older to eviction than one cached a minute ago and never
// opened since. The cost is one write per file per touchEvery at most,
// and the writes of a second share one transaction (touchFlushEvery); a
// trainer that opens each file once per epoch writes the same either way.
const touchEvery = time.Second

// touchFlushEvery is how often recorded access times are written to the
// index, all in one transaction: a write (two fsyncs) per open would make
// the first open of every small file after a restart wait for the disk.
const touchFlushEvery = time.Second

// touch notes that o was opened now, at most once per touchEvery; the
// time reaches the index with the next flush. Only objects with a record
// (some block present) are touched.
func (c *Cache) touch(o *object) {
	now := time.Now()
	o.mu.Lock()
	stale := o.rec.Present.Count() > 0 && now.Sub(o.rec.LastAccess) > touchEvery
	if stale {
		o.rec.LastAccess = now
	}
	o.mu.Unlock()
	if !stale {
		return
	}
	c.touchMu.Lock()
	c.touches[o.id] = now
	c.touchMu.Unlock()
}

// flushTouches writes the noted access times every touchFlushEvery, and
// once more when the cache closes.
func (c *Cache) flushTouches() {
	defer c.flusher.Done()
	tick := time.NewTicker(touchFlushEvery)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			c.flushTouchesNow()
		case <-c.ctx.Done():
			c.flushTouchesNow()
			return
		}
	}
}

func (c *Cache) flushTouchesNow() {
	c.touchMu.Lock()
	batch := c.touches
	if len(batch) == 0 {
		c.touchMu.Unlock()
		return
	}
	c.touches = make(map[string]time.Time)
	c.touchMu.Unlock()
	if err := c.db.TouchAll(batch); err != nil {
		c.log.Warn("record access times", "objects", len(batch), "err", err)
	}
	// A time written behind where eviction last stopped moves a record
	// there that eviction has not seen: make it look again.
	memo := c.memoTime.Load()
	for _, t := range batch {
		if t.UnixNano() <= memo {
			c.releases.Add(1)
			break
		}
	}
}

// acquire returns the in-use object for obj with one more reference,
// loading its record and opening its cache file on first use.
func (c *Cache) acquire(obj index.Object) (*object, error) {
	id := ObjectID(c.opts.Bucket, obj)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if o, ok := c.objs[id]; ok {
		o.refs++
		c.mu.Unlock()
		<-o.ready
		if errors.Is(o.loadErr, errDropped) {
			// Evicted meanwhile (evictIDs): open it afresh.
			c.release(o)
			return c.acquire(obj)
		}
		if o.loadErr != nil {
			c.release(o)
			return nil, o.loadErr
		}
		return o, nil
	}
	// Publish a placeholder and load without Cache.mu: a slow disk then
	// stalls only the opens of this object, and eviction sees it in use.
	o := &object{id: id, obj: obj, refs: 1, ready: make(chan struct{}), inflight: make(map[int64]*fetch)}
	if cs, ok := c.checked[id]; ok {
		o.verified, o.stamp = cs.verified, cs.stamp
		delete(c.checked, id)
	}
	c.objs[id] = o
	c.mu.Unlock()
	o.loadErr = c.load(o)
	close(o.ready)
	if o.loadErr != nil {
		c.release(o)
		return nil, o.loadErr
	}
	return o, nil
}

// load opens the cache file of o and reads its presence record. A record
// whose file has vanished, or that was written for another block size, is
// reset: its blocks are fetched again.
func (c *Cache) load(o *object) error {
	id, obj := o.id, o.obj
	path := objectPath(c.opts.Dir, id)
	rec, ok, err := c.db.Record(id)
	if err != nil {
		return fmt.Errorf("read cache record of %s: %w", obj.Key, err)
	}
	if ok {
		why := ""
		if _, statErr := os.Stat(path); errors.Is(statErr, os.ErrNotExist) {
			why = "cache file missing"
		} else if rec.BlockSize != c.opts.BlockSize || rec.Size != obj.Size {
			why = "recorded with another block size or object size"
		}
		if why != "" {
			c.log.Warn(why+"; fetching again", "key", obj.Key)
			if err := c.resetRecord(rec); err != nil {
				return fmt.Errorf("reset cache record of %s: %w", obj.Key, err)
			}
			o.verified = index.Blocks{} // nothing of the old file counts
			ok = false
		}
	}
	if !ok {
		rec = index.Record{
			ID: id, Key: obj.Key, Version: obj.Version(), Size: obj.Size,
			BlockSize: c.opts.BlockSize,
			Present:   index.NewBlocks(index.NumBlocks(obj.Size, c.opts.BlockSize)),
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create cache folder: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open cache file of %s: %w", obj.Key, err)
	}
	o.file, o.rec = f, rec
	return nil
}

// resetRecord forgets every block of rec, keeping the pins on it: the
// object is fetched again and stays protected from eviction.
func (c *Cache) resetRecord(rec index.Record) error {
	old, ok, err := c.db.ResetRecord(rec.ID)
	if ok {
		c.used.Add(-old.DiskUsage())
	}
	return err
}

// maxChecked bounds Cache.checked: past it, the memory of some object is
// let go, and its blocks are read back and checked again when next opened
// (a whole file's read before it can go passthrough). An entry is about
// 150 bytes plus one bit per block: some 15 MiB for 10^5 objects of a few
// hundred MiB, enough for the datasets this serves.
const maxChecked = 100000

// rememberChecked keeps cs as the checks of id, letting go of another
// object's when there are c.maxChecked already. c.mu is held.
func (c *Cache) rememberChecked(id string, cs checkedState) {
	if _, ok := c.checked[id]; !ok && len(c.checked) >= c.maxChecked {
		for other := range c.checked { // any one: map order is random
			delete(c.checked, other)
			break
		}
	}
	c.checked[id] = cs
}

// release drops one reference to o and closes its file when none is left.
func (c *Cache) release(o *object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o.refs--
	if o.refs > 0 {
		return
	}
	c.notePossiblyEvictableLocked(o)
	if c.objs[o.id] == o {
		delete(c.objs, o.id)
		// Every user of o has released it under c.mu, so verified is
		// no longer written: reading it here needs no o.mu (which
		// must not be taken inside c.mu).
		if o.loadErr == nil && o.verified.Count() > 0 && !o.superseded.Load() {
			c.rememberChecked(o.id, checkedState{verified: o.verified, stamp: o.stamp})
		}
	}
	c.dropFreshLocked(o)
	if o.file != nil {
		if err := o.file.Close(); err != nil {
			c.log.Warn("close cache file", "key", o.obj.Key, "err", err)
		}
	}
	if o.superseded.Load() {
		// A newer version landed while this one was open: drop it now.
		if err := c.dropLocked(o.id); err != nil {
			c.log.Warn("drop old version", "key", o.obj.Key, "err", err)
		}
	}
}

// notePossiblyEvictableLocked tells eviction that o, released for the
// last time, may be evictable now: unless it has nothing cached, is
// pinned, or sorts after where eviction last stopped (it will be seen
// there anyway), an eviction round must not trust what it found before.
// c.mu is held and nobody else holds o, so o.rec is read without o.mu.
func (c *Cache) notePossiblyEvictableLocked(o *object) {
	if o.dropping || o.loadErr != nil || o.rec.Present.Count() == 0 {
		return
	}
	if o.rec.LastAccess.UnixNano() > c.memoTime.Load() || c.db.PinnedKey(o.obj.Key) {
		return
	}
	c.releases.Add(1)
}

// readFile reads p at off from o's cache file, which must hold those blocks.
func readFile(o *object, p []byte, off int64) (int, error) {
	n, err := o.file.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		// The record says these bytes exist, so a short file is damage,
		// never the end of the object: fail the read (EIO), never serve
		// it short.
		return 0, fmt.Errorf("cache file of %s is shorter than recorded: %w", o.obj.Key, ErrCorrupt)
	}
	return n, err
}
