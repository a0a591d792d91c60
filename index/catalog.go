package index

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// CatalogOptions configure NewCatalog.
type CatalogOptions struct {
	// Prefix is the mount's S3 prefix: "" or ending in "/".
	Prefix string
	// TTL is how long a stored listing is used without asking S3. For
	// one further TTL an expired listing is still served at once while
	// one refresh runs in the background (stale-while-revalidate); older
	// or invalidated listings are listed again before use. A negative TTL
	// never refreshes a stored listing (indefinite); zero re-lists on
	// every use, and the caller waits.
	TTL time.Duration
	// Logger receives a warning per skipped S3 key, once per Catalog
	// (repeats go at debug level). nil discards.
	Logger *slog.Logger
	// Now is the clock listing ages are measured with. nil means time.Now.
	Now func() time.Time
	// OnGone, when set, is called after a folder is listed again with the
	// objects of its previous listing that S3 no longer holds as they
	// were: deleted, or replaced by another version (or by a folder). The
	// cache drops their data. A re-list that writes in several
	// transactions calls it once per transaction, after its commit, with
	// that part's objects. It is called from the listing goroutine; it
	// must not call back into the Catalog.
	OnGone func(gone []Object)
}

// Catalog answers folder reads of the mount from listings stored in the
// index, listing S3 through a Lister only when a folder's listing is
// missing or older than the TTL. All methods may be called concurrently.
type Catalog struct {
	db     *DB            // set once in NewCatalog
	lister Lister         // set once in NewCatalog
	opts   CatalogOptions // set once in NewCatalog; Logger and Now not nil

	// ctx is the listings' lifetime: the flights run on it (with the
	// first caller's values), and Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	flights  singleflight.Group // one S3 listing per prefix at a time
	calls    atomic.Int64       // Lister.List calls made
	unsorted atomic.Bool        // the Lister sent keys out of order once: list whole

	mu         sync.Mutex      // guards closed, refreshing and the Adds of wg
	closed     bool            // set by Close: no listing starts afterwards
	refreshing map[string]bool // prefixes with a background refresh running
	wg         sync.WaitGroup  // listings and background refreshes in flight
}

// ErrCatalogClosed is returned by a Catalog that would have to list S3
// after Close.
var ErrCatalogClosed = errors.New("catalog is closed")

// Entry is one name in a folder of the mount.
type Entry struct {
	Name   string // one path component, valid under the name rules
	IsDir  bool
	Object Object // files only
}

// NewCatalog returns a Catalog of the folder tree under opts.Prefix, kept in
// db and listed through l.
func NewCatalog(db *DB, l Lister, opts CatalogOptions) *Catalog {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// A folder is listed again after every TTL: warn about a skipped key
	// once per run.
	opts.Logger = newWarnOnce(opts.Logger)
	ctx, cancel := context.WithCancel(context.Background())
	return &Catalog{db: db, lister: l, opts: opts, ctx: ctx, cancel: cancel}
}

// Close cancels the listings in flight, background refreshes included, and
// waits for them; afterwards a read that needs S3 fails with
// ErrCatalogClosed (stored listings that are fresh, or stale within the
// bound, still answer while the DB is open). Call it before closing the DB.
func (c *Catalog) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// ReadDir returns the entries of dir, sorted by name, read in one
// transaction. dir is relative to the mount root: "" for the root, else
// "a/b" without leading or trailing slash. A folder that S3 has nothing
// under reads as empty. It holds every entry in memory at once: the mount
// reads big folders a page at a time instead (Generation, ReadDirPage).
func (c *Catalog) ReadDir(ctx context.Context, dir string) ([]Entry, error) {
	prefix, err := c.prefix(dir)
	if err != nil {
		return nil, err
	}
	if _, err := c.use(ctx, prefix); err != nil {
		return nil, err
	}
	es, _, _, err := c.db.EntryPage(prefix, "", math.MaxInt)
	return es, err
}

// Generation makes sure dir has a listing that may be read now, under the
// same rules as ReadDir (listing S3 if it must), and returns the listing's
// change generation (see FolderInfo.Gen): while it stays the same, so do
// dir's entries. It is never 0.
func (c *Catalog) Generation(ctx context.Context, dir string) (uint64, error) {
	prefix, err := c.prefix(dir)
	if err != nil {
		return 0, err
	}
	info, err := c.use(ctx, prefix)
	return info.Gen, err
}

// ReadDirPage returns up to n entries of dir's stored listing with names
// after after ("" for the first page), sorted by name, and the generation
// they were read at, without asking S3 whatever the listing's age: call
// Generation first. Pages read at one generation are pages of one listing;
// between pages read at different generations a re-list landed, and each
// entry shows either listing, but a name that did not change is never
// skipped or repeated by paging on after. Generation 0 means no listing of
// dir is stored.
func (c *Catalog) ReadDirPage(ctx context.Context, dir, after string, n int) ([]Entry, uint64, error) {
	prefix, err := c.prefix(dir)
	if err != nil {
		return nil, 0, err
	}
	es, info, _, err := c.db.EntryPage(prefix, after, n)
	return es, info.Gen, err
}

// Lookup returns the entry name in dir. If the listing of dir (fresh,
// stale within the bound, or fetched now) has no such name the error wraps
// io/fs.ErrNotExist; a usable stored listing answers without asking S3,
// with one read of the index.
func (c *Catalog) Lookup(ctx context.Context, dir, name string) (Entry, error) {
	if why := nameProblem(name); why != "" {
		return Entry{}, fmt.Errorf("lookup %q in %q: %s: %w", name, dir, why, iofs.ErrNotExist)
	}
	prefix, err := c.prefix(dir)
	if err != nil {
		return Entry{}, err
	}
	info, ok, e, found, err := c.db.lookupEntry(prefix, name)
	if err != nil {
		return Entry{}, err
	}
	if _, listed, err := c.settle(ctx, prefix, info, ok); err != nil {
		return Entry{}, err
	} else if listed {
		if _, _, e, found, err = c.db.lookupEntry(prefix, name); err != nil {
			return Entry{}, err
		}
	}
	if !found {
		return Entry{}, fmt.Errorf("lookup %q in %q: %w", name, dir, iofs.ErrNotExist)
	}
	return e, nil
}

// Invalidate marks the stored listing of dir stale, so its next use lists
// S3 whatever the TTL (and waits for it: an invalidated listing is not
// served stale). The old entries are kept until then, so that what changed
// can be told (OnGone).
func (c *Catalog) Invalidate(dir string) error {
	prefix, err := c.prefix(dir)
	if err != nil {
		return err
	}
	return c.db.invalidateListing(prefix)
}

// Refresh lists dir from S3 now, whatever the age of its stored listing.
func (c *Catalog) Refresh(ctx context.Context, dir string) error {
	prefix, err := c.prefix(dir)
	if err != nil {
		return err
	}
	_, err = c.listing(ctx, prefix, true)
	return err
}

// prefix returns the S3 prefix of dir, or an error wrapping
// io/fs.ErrInvalid if dir is not a clean relative folder path.
func (c *Catalog) prefix(dir string) (string, error) {
	if dir == "" {
		return c.opts.Prefix, nil
	}
	for part := range strings.SplitSeq(dir, "/") {
		if why := nameProblem(part); why != "" {
			return "", fmt.Errorf("folder %q: %s: %w", dir, why, iofs.ErrInvalid)
		}
	}
	return c.opts.Prefix + dir + "/", nil
}

// freshness says how a stored listing may be used.
type freshness int

const (
	expired freshness = iota // list S3 and wait for it
	fresh                    // answer from it
	stale                    // answer from it, and refresh it in the background
)

// freshness classifies a listing taken at listedAt. Within the TTL it is
// fresh; for one further TTL it is stale (served while it is refreshed);
// after that, invalidated (zero), or dated in the future (the clock went
// back: distrust it) it is expired. A negative TTL keeps every listing
// fresh; a zero TTL expires each at once.
func (c *Catalog) freshness(listedAt time.Time) freshness {
	if listedAt.IsZero() {
		return expired
	}
	if c.opts.TTL < 0 {
		return fresh
	}
	age := c.opts.Now().Sub(listedAt)
	switch {
	case age < 0:
		return expired
	case age < c.opts.TTL:
		return fresh
	case age-c.opts.TTL < c.opts.TTL:
		return stale
	}
	return expired
}

// use makes sure prefix has a listing that may be read now and returns
// its FolderInfo (see settle).
func (c *Catalog) use(ctx context.Context, prefix string) (FolderInfo, error) {
	info, ok, err := c.db.FolderInfo(prefix)
	if err != nil {
		return FolderInfo{}, err
	}
	info, _, err = c.settle(ctx, prefix, info, ok)
	return info, err
}

// settle decides whether the stored listing of prefix, with info (ok: one
// is stored), answers now: a fresh one does; a stale one does and starts a
// background refresh; otherwise S3 is listed and the caller waits, and
// listed is true (what the caller read before is out of date).
func (c *Catalog) settle(ctx context.Context, prefix string, info FolderInfo, ok bool) (_ FolderInfo, listed bool, _ error) {
	if ok {
		switch c.freshness(info.ListedAt) {
		case fresh:
			return info, false, nil
		case stale:
			c.revalidate(prefix)
			return info, false, nil
		}
	}
	info, err := c.listing(ctx, prefix, false)
	return info, true, err
}

// revalidate lists prefix in the background unless that is already under
// way (or the Catalog is closed). The goroutine is the Catalog's: counted
// in wg, its listing cancelled by Close. A failure is logged and the stale
// listing stays, to be tried again by the next use while it is within the
// bound.
func (c *Catalog) revalidate(prefix string) {
	c.mu.Lock()
	if c.closed || c.refreshing[prefix] {
		c.mu.Unlock()
		return
	}
	if c.refreshing == nil {
		c.refreshing = make(map[string]bool)
	}
	c.refreshing[prefix] = true
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		defer func() {
			c.mu.Lock()
			delete(c.refreshing, prefix)
			c.mu.Unlock()
		}()
		if _, err := c.listing(c.ctx, prefix, false); err != nil && c.ctx.Err() == nil {
			c.opts.Logger.Warn("background re-list failed; the older listing is served meanwhile", "prefix", prefix, "err", err)
		}
	}()
}

// listing lists prefix from S3 (sharing one flight with concurrent callers)
// unless, when not forced, the flight finds a fresh listing stored, and
// returns the stored FolderInfo afterwards.
func (c *Catalog) listing(ctx context.Context, prefix string, force bool) (FolderInfo, error) {
	if err := ctx.Err(); err != nil {
		return FolderInfo{}, fmt.Errorf("list %q: %w", prefix, err)
	}
	// Forced and unforced calls fly separately: an unforced flight may
	// answer from a stored listing without asking S3, which a Refresh
	// must not accept.
	key := "l" + prefix
	if force {
		key = "r" + prefix
	}
	// The shared listing runs detached from ctx, so one caller giving up
	// does not fail it for the others who joined; it ends when the
	// Lister returns (the Lister bounds its own requests) or Close
	// cancels it.
	ch := c.flights.DoChan(key, func() (any, error) {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return FolderInfo{}, fmt.Errorf("list %q: %w", prefix, ErrCatalogClosed)
		}
		c.wg.Add(1)
		c.mu.Unlock()
		defer c.wg.Done()
		lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		defer stop()
		defer context.AfterFunc(c.ctx, stop)()
		return c.list(lctx, prefix, force)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return FolderInfo{}, res.Err
		}
		return res.Val.(FolderInfo), nil
	case <-ctx.Done():
		return FolderInfo{}, fmt.Errorf("list %q: %w", prefix, ctx.Err())
	}
}

// list asks S3 for prefix and merges the answer into the store (writing
// only what changed; OnGone hears of what vanished). It first takes the
// folder's listing lock, waiting for a re-list of it under way; then,
// unless forced, it re-checks the store: a flight that ended while this
// caller waited has already done the work.
func (c *Catalog) list(ctx context.Context, prefix string, force bool) (FolderInfo, error) {
	r := c.db.beginRelist(prefix, c.opts.Logger, c.opts.OnGone)
	defer r.close()
	if !force {
		info, ok, err := c.db.FolderInfo(prefix)
		if err != nil || (ok && c.freshness(info.ListedAt) == fresh) {
			return info, err
		}
	}
	// The listing's time is taken before asking S3: anything S3 changes
	// during the call is then at most TTL old when it is next refreshed.
	r.listedAt = c.opts.Now()
	var err error
	pl, paged := c.lister.(PageLister)
	if paged && !c.unsorted.Load() {
		err = c.listPages(ctx, pl, r)
		if errors.Is(err, errUnsorted) {
			// Pages already written may have dropped files the server
			// had not sent yet (their data with them); it will not
			// happen twice.
			c.unsorted.Store(true)
			c.opts.Logger.Warn("S3 listed keys out of order; listing folders whole from now on", "prefix", prefix, "err", err)
			r.reset()
		}
	}
	if !paged || c.unsorted.Load() {
		err = c.listWhole(ctx, r)
	}
	if err != nil {
		return FolderInfo{}, err
	}
	info, _, err := c.db.FolderInfo(prefix)
	return info, err
}

// listPages lists prefix a page at a time and merges each page into the
// store as it arrives (relist). The Lister runs in a goroutine of its own,
// at most two pages ahead of the merge, so that S3's next page is on its
// way while the index writes the last; it has ended when listPages
// returns.
func (c *Catalog) listPages(ctx context.Context, pl PageLister, r *relist) error {
	prefix := r.prefix
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pages := make(chan ListResult, 2)
	listed := make(chan error, 1)
	c.calls.Add(1)
	go func() {
		defer close(pages)
		listed <- pl.ListPages(lctx, prefix, func(page ListResult) error {
			select {
			case pages <- page:
				return nil
			case <-lctx.Done():
				return lctx.Err()
			}
		})
	}()
	var merr error
	for page := range pages {
		if merr == nil {
			if merr = r.add(page); merr != nil {
				cancel()
			}
		}
	}
	if lerr := <-listed; merr == nil && lerr != nil {
		return fmt.Errorf("list %q: %w", prefix, lerr)
	}
	if merr != nil {
		return merr
	}
	_, err := r.finish()
	return err
}

// listWhole lists prefix whole and then merges it: for Listers that cannot
// page, and for servers that send keys out of order.
func (c *Catalog) listWhole(ctx context.Context, r *relist) error {
	c.calls.Add(1)
	res, err := c.lister.List(ctx, r.prefix)
	if err != nil {
		return fmt.Errorf("list %q: %w", r.prefix, err)
	}
	r.addWhole(toListing(r.prefix, res, r.listedAt, c.opts.Logger))
	_, err = r.finish()
	return err
}
