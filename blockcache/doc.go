// Package blockcache is s3cachefs's SSD store: it keeps the bytes of each S3
// object version in one sparse cache file and fetches missing blocks from S3
// on demand. Folder-level operations on it (prefetch jobs, verify, evict,
// unpin) are package blockcache/prefetch, which uses only what this
// package exports.
//
// # On-disk layout
//
// Every object version has one cache file, Dir/objects/XX/ID, where ID is a
// hex SHA-256 of (bucket, key, version, size) and XX its first two digits.
// The S3 key never becomes part of a path, so no key can name a file
// outside the cache directory. Files are created 0600, folders 0700. The
// file is sparse: only fetched blocks occupy disk.
//
// # Block presence
//
// An object is split into blocks of Options.BlockSize (1 MiB by default).
// Which blocks hold valid bytes is recorded in the index, and only after the
// bytes were written and fdatasync'd: after a crash a block is either
// recorded and durable, or not recorded and fetched again. Bytes in the file
// that the index does not list are never served.
//
// # Fetching
//
// A read of missing blocks fetches the part (Options.PartSize, several
// blocks) that holds them with one ranged GET pinned to the listed ETag. A
// response for another version fails with index.ErrStale and nothing of it
// is recorded. Concurrent readers of one part share one fetch; the fetch
// runs on the cache's own context, so a reader that gives up does not
// cancel it for the others. A reader that starts at offset 0 gets a
// read-ahead window of half Options.ReadAhead at once (most such readers
// read the whole file, and its parts then download in parallel); another
// sequential reader (a read within a part of where the last one ended)
// starts at two parts. Each sequential read quadruples the window up to
// Options.ReadAhead; a random read resets it.
//
// The Source retries failed requests; a body that breaks off midway (reset,
// truncation, a stall cut by the Source's timeout) is retried here, from
// the first block still missing, since whole blocks read before the break
// are committed. A part gives up after Options.BodyAttempts broken bodies
// that brought no new block; the read then fails for that file only.
//
// # Group commit
//
// A fetch records its blocks (and, for the first commit of an object
// version, the version as its key's current one) through one group commit
// (groupcommit.go, index.DB.AddBlocksMany): after its own fdatasync, it
// queues its add; a fetch that finds no commit running commits everything
// queued in one index transaction, then hands the lead to the first fetch
// that queued meanwhile. A read's fetch (urgent, or promoted by a reader
// waiting on it) is committed at once, with whatever is queued. While only
// background fetches (Warm's) are queued and others are on their way
// (between the start of their GET and their commit), the leader gathers
// them first, up to 64 adds or 100 ms after the oldest was queued, so a
// prefetch of small files costs well under 0.1 index commits per file
// even when S3 is slow. Cache-file syncs stay one
// per part: each fetch syncs its own file before it queues, so a block is
// recorded only after its bytes are durable, and a kill -9 loses at most
// the adds queued or in the transaction running.
//
// # Fresh blocks and O_DIRECT
//
// A block fetched while a Handle has its object open is kept in the
// fetch's buffer, up to half of Options.MaxFetches blocks across the cache,
// and the first read of it is served from there (fresh.go): neither read
// back from SSD nor checked again. Such blocks, and those of a fetch nobody
// has open (a prefetch's), are written with O_DIRECT (direct.go): through
// the page cache they would cost a copy into new page-cache pages, the
// dearest step of the fetch path, and push the readers' working set out of
// memory. Blocks a reader will read back from SSD (the bound was reached)
// go through the page cache, from which that read is cheap. A filesystem
// that refuses O_DIRECT gets every write through the page cache.
//
// # The gate
//
// At most Options.MaxFetches GETs are in flight: each fetch holds a token
// of the gate (sem.go) while its request and body run, and lets go of it
// before the fsync and index commit that follow, which need no connection.
// The gate serves urgent waiters (reads, read-ahead) before background ones
// (Warm, that is prefetch); a background fetch that a reader starts
// waiting on becomes urgent, so a trainer's read jumps a prefetch's queue
// even when the prefetch asked for the part first.
//
// # Uncached reads
//
// A fetch that cannot get room on SSD (everything evictable was, and the
// rest is pinned or open; or the disk filled up under the write) fails
// with ErrCacheFull, and the read that needed it is served straight from
// S3 into the reader's buffer with a ranged GET of its own (handle.go):
// nothing is written or recorded, the gate is not taken (it is the
// reader's own request), and Stats.Uncached counts it. A body that breaks
// off is asked for again from where it stopped, within the same budget as
// a fetch's.
//
// # Checks
//
// Each block's CRC-32C is recorded with its presence. Every read through a
// Handle reads each block it takes from SSD whole and compares it with its
// sum, on every read, not only the first of a run (handle.go): a damaged
// block is forgotten and fetched again. The block a handle holds from its
// previous read and a fresh block (fresh.go) are not read again: they were
// checked or summed when they were filled. Handle.Backing hands out the
// cache file only when every block is present and checked (checksum.go's
// check, once per block per daemon run: blocks checked stay checked across
// closes and reopens while the file is unchanged, stamp.go), because
// whoever reads it then (the kernel, in FUSE passthrough) bypasses these
// checks. A block just fetched counts as checked: it was summed from the
// bytes written.
//
// # Eviction
//
// The space cached blocks take (each rounded to filesystem blocks, as the
// sparse file allocates them) is counted in memory, from the index's
// counters at start (no walk of the records or the cache folder), and
// every fetch reserves room for its blocks before its GET. When a
// reservation would pass Options.MaxBytes or leave less than
// Options.MinFree free, the fetch evicts, in the fetching goroutine,
// holding evictMu, least recently opened objects that are neither pinned
// nor open, until there is room for it and a margin of two fetch parts
// beyond (evict.go): a small margin, since every fetch waits while a round
// runs. It reads the index's access order oldest first, in chunks of 256
// (index.DB.Oldest: ID, key, disk usage), skips objects whose key is under
// a pinned path (an in-memory test), and stops as soon as enough is freed.
// Each chunk's victims are dropped together: Cache.mu is held only to put
// a placeholder in the objects in use for each (an open of one waits for
// it, then opens the object afresh) and to take them out again; the index
// deletes their records in one transaction and their files are unlinked,
// eight at a time, with no lock held, so opens of other objects never wait
// for eviction's disk writes.
//
// A round remembers where it stopped: everything before was pinned, open
// or evicted. The next round starts there unless a pin was dropped
// (index.DB.PinsGen) or something that sorts before it became
// evictable: the last release of an unpinned object dated before it, or
// an access time written before it. So with the cache full and the rest
// pinned or open, a cold read does not read the index again until
// something changes. Access times are noted on open at most once a
// second per object and written to the index in one batch a second, and
// at the start of each round, so that a file opened a moment ago is never
// taken for the least recently used; a new record is dated when it is
// made.
//
// # Shared tier
//
// With Options.Tier (shared.go), the first fetch of an object of which
// nothing is cached and whose ETag proves bytes (Tier.Provable) is one fill
// of the whole object from the tier instead of per-part GETs: every part's
// waiters wait on it; it streams Tier.Fill into the cache file a block at
// a time, summing each block, reserving the object's room with the first
// byte, and records every block in one commit only if Fill returns nil
// (the tier proved the bytes are the object). Otherwise (no entry, a
// refused entry, no room) it records nothing, punches out what it wrote,
// and ends with errTierFallback, on which await and Warm start the usual
// fetches from S3. Warm, before that, claims an object the tier has no
// entry of (Tier.Claim), so that of the nodes prefetching it one fetches
// it; with the claim taken by another node it waits (Tier.AwaitClaim) and
// fills again, or, as WarmUnclaimed, returns ErrClaimed at once. The claim
// goes with the object to the publisher, or is released when Warm returns
// with the object incomplete. An object that becomes complete from S3
// fetches is queued (at most 256; more are dropped, counted, their claims
// released) for the publisher goroutine, whose 4 workers read the cache
// file checking each block against its sum and hand it to Tier.Publish,
// then release its claim; at Close the claims of objects still queued are
// released.
//
// # Versions
//
// The first commit of a version records it as its key's current one (in
// the transaction that records its blocks: index.BlockAdd.Current) and
// drops the data of the version it replaces; a version in use is marked
// superseded and dropped by its last release.
// Forget drops versions the catalog found gone from S3.
//
// # Concurrency
//
// Cache and Handle methods may be called from many goroutines. The locks,
// outermost first:
//
//	Cache.evictMu   reservations and eviction (evict.go)
//	object.mu       an object's record, checks, fetches in flight and
//	                fresh blocks
//	Cache.mu        the objects in use, their references, and checked
//	index           bbolt's writer lock: taken under Cache.evictMu or
//	                Cache.mu, never under object.mu
//
// groupCommit.mu is a leaf too; a commit queues its add under object.mu
// (so the adds of one object keep their order) and commits with no lock
// held.
//
// object.mu before Cache.mu: startFetch takes a reference to the object
// while it holds the object. Cache.mu is never held while object.mu is
// taken: the last release of an object (and dropFreshLocked in it) runs
// under Cache.mu alone, which is safe because nobody else holds the object
// then. Cache.evictMu is taken with neither object.mu nor Cache.mu held;
// eviction takes Cache.mu under it briefly, to claim the objects it drops
// and to let them go, and deletes them without it. Dropping a replaced
// or vanished version holds Cache.mu across its index write and unlink,
// so that nobody opens it meanwhile. The index's in-memory pins are a
// leaf lock: PinnedKey may be called under Cache.mu. Handle.mu, the
// gate's mutex and Cache.touchMu are leaves: nothing else is taken while
// one is held (and no index call is made). Opening an object's file and
// reading its record run without any lock, behind a placeholder that other
// openers wait on.
//
// # Goroutines
//
//	goroutine      started by                stopped by                     Close waits with
//	flushTouches   New                       Close: cancels c.ctx; it       Cache.flusher
//	                                         flushes once more and returns
//	a part fetch   startFetch, from ReadAt,  its GET and commit ending, or  Cache.wg
//	               its read-ahead, and Warm  Close: cancels c.ctx, which
//	                                         ends the gate wait, the GET
//	                                         and the wait between retries
//	publisher      New, with Options.Tier    Close: cancels c.ctx; its 4    Cache.flusher
//	(and 4 workers)                          workers end their publish,
//	                                         it releases queued claims
//
// (A claim's renewal goroutine belongs to the Tier: package tier starts
// it with the claim and stops it when the claim is released.)
// A fetch runs on after the reader that started it gives up; it holds a
// reference to its object, so the object's file stays open until it ends.
// Group commits start no goroutine: each runs on the goroutine of the
// fetch that leads it, and a leader's gathering ends within 100 ms.
// Close marks the cache closed (no fetch starts afterwards), cancels, and
// waits for all of them before it closes the cache files. Nothing else in
// the package starts a goroutine.
package blockcache
