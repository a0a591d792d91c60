package index

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"slices"
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
	// TTL is how long a stored listing is used without asking S3. A
	// negative TTL never refreshes a stored listing (indefinite); zero
	// re-lists on every use.
	TTL time.Duration
	// Logger receives a warning per skipped S3 key, once per Catalog
	// (repeats go at debug level). nil discards.
	Logger *slog.Logger
	// Now is the clock listing ages are measured with. nil means time.Now.
	Now func() time.Time
	// OnGone, when set, is called after a folder is listed again with the
	// objects of its previous listing that S3 no longer holds as they
	// were: deleted, or replaced by another version. The cache drops
	// their data. It is called from the listing goroutine; it must not
	// call back into the Catalog.
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

	flights singleflight.Group // one S3 listing per prefix at a time
	calls   atomic.Int64       // Lister.List calls made

	mu     sync.Mutex     // guards closed and the Adds of wg
	closed bool           // set by Close: no listing starts afterwards
	wg     sync.WaitGroup // listings in flight
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

// Close cancels the listings in flight and waits for them; afterwards a
// read that needs S3 fails with ErrCatalogClosed (stored fresh listings
// still answer while the DB is open). Call it before closing the DB.
func (c *Catalog) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// ReadDir returns the entries of dir, sorted by name. dir is relative to
// the mount root: "" for the root, else "a/b" without leading or trailing
// slash. A folder that S3 has nothing under reads as empty.
func (c *Catalog) ReadDir(ctx context.Context, dir string) ([]Entry, error) {
	l, err := c.listing(ctx, dir, false)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(l.Dirs)+len(l.Files))
	for _, d := range l.Dirs {
		out = append(out, Entry{Name: d, IsDir: true})
	}
	for _, o := range l.Files {
		out = append(out, Entry{Name: o.Key[len(l.Prefix):], Object: o})
	}
	// Dirs and Files are each sorted and share no name; merge them.
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Lookup returns the entry name in dir. If the listing of dir (fresh, or
// fetched now) has no such name the error wraps io/fs.ErrNotExist; a fresh
// stored listing answers without asking S3.
func (c *Catalog) Lookup(ctx context.Context, dir, name string) (Entry, error) {
	if why := nameProblem(name); why != "" {
		return Entry{}, fmt.Errorf("lookup %q in %q: %s: %w", name, dir, why, iofs.ErrNotExist)
	}
	l, err := c.listing(ctx, dir, false)
	if err != nil {
		return Entry{}, err
	}
	if _, ok := slices.BinarySearch(l.Dirs, name); ok {
		return Entry{Name: name, IsDir: true}, nil
	}
	key := l.Prefix + name
	i, ok := slices.BinarySearchFunc(l.Files, key, func(o Object, k string) int { return strings.Compare(o.Key, k) })
	if ok {
		return Entry{Name: name, Object: l.Files[i]}, nil
	}
	return Entry{}, fmt.Errorf("lookup %q in %q: %w", name, dir, iofs.ErrNotExist)
}

// Invalidate marks the stored listing of dir stale, so its next use lists
// S3 whatever the TTL. The old entries are kept until then, so that what
// changed can be told (OnGone).
func (c *Catalog) Invalidate(dir string) error {
	prefix, err := c.prefix(dir)
	if err != nil {
		return err
	}
	l, ok, err := c.db.Listing(prefix)
	if err != nil || !ok {
		return err
	}
	l.ListedAt = time.Time{}
	return c.db.PutListing(l)
}

// Refresh lists dir from S3 now, whatever the age of its stored listing.
func (c *Catalog) Refresh(ctx context.Context, dir string) error {
	_, err := c.listing(ctx, dir, true)
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

// fresh reports whether a listing taken at listedAt may still be used. A
// listing from the future means the clock went back: distrust it.
func (c *Catalog) fresh(listedAt time.Time) bool {
	if listedAt.IsZero() {
		return false // invalidated
	}
	if c.opts.TTL < 0 {
		return true
	}
	age := c.opts.Now().Sub(listedAt)
	return age >= 0 && age < c.opts.TTL
}

// listing returns the listing of dir: the stored one if it is fresh and
// force is false, else a new one from S3, stored before it is returned.
func (c *Catalog) listing(ctx context.Context, dir string, force bool) (Listing, error) {
	prefix, err := c.prefix(dir)
	if err != nil {
		return Listing{}, err
	}
	if !force {
		if l, ok, err := c.stored(prefix); err != nil || ok {
			return l, err
		}
	}
	if err := ctx.Err(); err != nil {
		return Listing{}, fmt.Errorf("list %q: %w", prefix, err)
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
			return Listing{}, fmt.Errorf("list %q: %w", prefix, ErrCatalogClosed)
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
			return Listing{}, res.Err
		}
		return res.Val.(Listing), nil
	case <-ctx.Done():
		return Listing{}, fmt.Errorf("list %q: %w", prefix, ctx.Err())
	}
}

// stored returns the stored listing of prefix if it is fresh (ok).
func (c *Catalog) stored(prefix string) (l Listing, ok bool, err error) {
	l, ok, err = c.db.sharedListing(prefix)
	if err != nil || !ok || !c.fresh(l.ListedAt) {
		return Listing{}, false, err
	}
	return l, true, nil
}

// list asks S3 for prefix and stores the result. Unless forced it first
// re-checks the store: a flight that ended while this caller was reading
// the stale listing has already done the work.
func (c *Catalog) list(ctx context.Context, prefix string, force bool) (Listing, error) {
	if !force {
		if l, ok, err := c.stored(prefix); err != nil || ok {
			return l, err
		}
	}
	// The listing's time is taken before asking S3: anything S3 changes
	// during the call is then at most TTL old when it is next refreshed.
	listedAt := c.opts.Now()
	c.calls.Add(1)
	res, err := c.lister.List(ctx, prefix)
	if err != nil {
		return Listing{}, fmt.Errorf("list %q: %w", prefix, err)
	}
	l := toListing(prefix, res, listedAt, c.opts.Logger)
	old, hadOld, err := c.db.Listing(prefix)
	if err != nil {
		return Listing{}, err
	}
	if err := c.db.PutListing(l); err != nil {
		return Listing{}, err
	}
	if gone := goneFiles(old.Files, l.Files); hadOld && len(gone) > 0 && c.opts.OnGone != nil {
		c.opts.OnGone(gone)
	}
	return l, nil
}

// goneFiles returns the objects of before that after lacks as they were:
// their key is gone or holds another version. Both are sorted by key.
func goneFiles(before, after []Object) []Object {
	now := make(map[string]string, len(after))
	for _, o := range after {
		now[o.Key] = o.Version()
	}
	var gone []Object
	for _, o := range before {
		if v, ok := now[o.Key]; !ok || v != o.Version() {
			gone = append(gone, o)
		}
	}
	return gone
}
