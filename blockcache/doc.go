// Package blockcache is s3cachefs's SSD store: it keeps the bytes of each S3
// object version in one sparse cache file and fetches missing blocks from S3
// on demand.
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
// Options.ReadAhead; a random read resets it. At most Options.MaxFetches
// GETs are in flight.
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
// The Source retries failed requests; a body that breaks off midway (reset,
// truncation, a stall cut by the Source's timeout) is retried here, from
// the first block still missing, since whole blocks read before the break
// are committed. A part gives up after Options.BodyAttempts broken bodies
// that brought no new block; the read then fails for that file only.
//
// # Checks
//
// Each block's CRC-32C is recorded with its presence. A block is read back
// and checked against it the first time it is served in a daemon run (a
// damaged block is forgotten and fetched again); blocks checked stay
// checked across closes and reopens for the rest of the run. A block just
// fetched counts as checked: it was summed from the bytes written.
// Handle.Backing hands out the cache file only when every block is present
// and checked, because whoever reads it then (the kernel, in FUSE
// passthrough) bypasses these checks.
//
// # Concurrency
//
// Cache and Handle methods may be called from many goroutines. Lock order:
// object.mu before Cache.mu (startFetch takes a file reference while it
// holds the object). Opening an object's file and reading its record run
// without either lock, behind a placeholder that other openers wait on;
// dropping an object (eviction, a replaced version) holds Cache.mu across
// its index write and unlink, so that nobody opens it meanwhile.
package blockcache
