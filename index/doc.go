// Package index is s3cachefs's metadata store: the only package that imports
// bbolt. It keeps folder listings (with the time they were taken), cached
// object versions and their block presence, in one bbolt file inside the
// cache directory.
//
// # On-disk layout
//
// One bbolt file, created with mode 0600 and flock'ed while open: a second
// daemon on the same cache directory fails Open with ErrLocked. It holds
// these buckets:
//
//	meta      "schema" -> uvarint SchemaVersion (1)
//	listings  "/" + S3 prefix -> listing value   (root prefix "" is key "/")
//	records   cache ID -> record value
//	jobs      job ID -> job value
//	pins      cache ID + "\x00" + job ID -> empty
//	jobpins   job ID + "\x00" + cache ID -> empty
//	current   S3 key -> current value
//
// Open creates any missing bucket, so a schema 1 file written before jobs,
// pins and current existed gains them.
//
// A pin (a job needs an object kept; eviction skips pinned objects) is
// stored in both pins and jobpins, written and deleted in one transaction,
// so "which jobs pin this object" and "which objects does this job pin" are
// each one prefix scan. Job and cache IDs used in pins are non-empty and
// contain no NUL, so the prefix id+"\x00" matches exactly one ID. Pin needs
// the job stored; DeleteJob drops the job's pins and DeleteRecord the
// object's, in the same transaction as the deletion, so no pin outlives its
// job or its data. ResetRecord forgets a record but keeps its pins (its
// blocks are fetched again, still protected), CancelJob records a job
// cancelled and drops its pins, and PruneJobs deletes old ended jobs that
// hold no pins: each in one transaction. A write of several steps that
// must not be seen halfway is one DB method, never a sequence of calls.
//
// current maps each S3 key to the cache ID of the version readers use.
// SetCurrent returns the ID it replaces exactly once, for the caller to
// drop; an evicted record may still be current (it is fetched again).
//
// Open creates the buckets in an empty file and refuses with ErrSchema a
// file whose schema version differs, or a bbolt file without a meta bucket
// that holds other buckets. A change of layout that old code must not read
// bumps SchemaVersion.
//
// Values use an explicit binary codec (codec.go). Their first byte is the
// codec version: 1, or 2 for a record that carries block checksums; the rest
// are encoding/binary varints, length-prefixed strings, and times as Unix
// seconds plus nanoseconds (stored in UTC, clamped to the years 1..9999).
// Keys are not repeated inside values. A listing value is ListedAt, then the
// child folder names, then each file's key, size, ETag and LastModified,
// both lists sorted and unique. A record value is key, version, size, block
// size, LastAccess, the number of blocks and the presence bitmap (bit i%8 of
// byte i/8 is block i); in version 2 it is followed by each block's CRC-32C
// (Castagnoli), 4 bytes little endian per block, 0 for "not known", recorded
// in the same transaction as the block's presence (AddBlocksSums). A record
// without checksums (written before they existed) is version 1, and its
// blocks are read as blocks without a sum. A job value is Created, the state byte (running 0, done 1,
// failed 2, cancelled 3), the paths, the error text and the failed keys. A
// current value is the cache ID.
// Decoding never panics: truncated, overlong, unsorted, out-of-range or
// trailing data fails with an error wrapping ErrCorrupt.
//
// # Name rules
//
// A listing of prefix P turns S3's answer into folder entries. Each S3 key
// is shown or skipped by exactly one of these rules, checked in order:
//
//   - A common prefix P+"name/" is the folder "name"; an object key P+"name"
//     is the file "name". Names are shown byte for byte as S3 has them
//     (spaces, "%", "+", non-ASCII letters, a leading "." all stay).
//   - Keys ending in "/" are folder markers and never files; they are
//     skipped at debug level, not warned about, as they are common and hide
//     nothing: a marker P+"name/" makes S3 return the common prefix
//     P+"name/", so the folder is shown (empty if nothing else is in it).
//     With delimiter "/" the only marker S3 returns as an object is P
//     itself.
//   - Skipped, with a warning per key (once per daemon run; later
//     listings repeat it at debug level), because no Linux file can carry the
//     name or showing it would mislead: an empty name (as from "//" runs:
//     P+"/x" lists as the common prefix P+"/", so nothing below a "//" is
//     reachable), "." and "..", names longer than 255 bytes, names
//     containing "/", names that are not valid UTF-8, names containing a
//     control character (Unicode Cc: NUL to U+001F, DEL to U+009F), and
//     keys that do not start with P.
//   - A name that is both a folder and a file (keys P+"x" and P+"x/...")
//     is the folder; the file is skipped with a warning (it cannot be
//     reached in the mount).
//   - A name listed twice is kept once, with a warning; of two objects
//     with one key the newer (by LastModified) is kept.
//
// Lookup applies the same rules to the name asked for, so a skipped name
// is ENOENT without asking S3. The same S3 answer always gives the same
// entries, in any order: skipping depends only on the keys. No name is
// ever used as a path in the cache directory (cache files are named by a
// hash), so no key can reach outside it. Warnings quote the key (slog's
// text handler escapes control bytes), so a key cannot forge log lines.
//
// # Freshness
//
// A Catalog stores each folder's listing with the time it was asked for.
// Within CatalogOptions.TTL, ReadDir and Lookup are answered from the store
// with no S3 request, and a name missing from the listing is
// io/fs.ErrNotExist at once. An older or missing listing is listed again
// (one Lister.List call, shared by concurrent callers of the same folder)
// and stored before it is used. A negative TTL never refreshes a stored
// listing; a zero TTL lists on every use. A listing dated in the future
// (the clock went back) counts as stale. A failed listing is not stored
// and its error is returned wrapped; an older stored listing is not served
// in its place. The shared Lister call runs detached from the callers'
// contexts: a caller that gives up returns its context's error at once,
// and the listing still completes and is stored for the others.
//
// # Failure modes
//
// Every write is one bbolt transaction, fsync'd on commit, so a crash
// leaves each listing and record either as before or as after the write.
// AddBlocks records only blocks the caller has already made durable.
//
// # Concurrency
//
// DB and Catalog methods may be called from many goroutines. bbolt allows
// one writer at a time: AddBlocks, the frequent write, goes through
// bbolt's Batch so concurrent calls share one fsync'd transaction (its
// callback is idempotent, as Batch may rerun it); blockcache gathers the
// adds of concurrent fetches itself and records them, with the current
// version of each object's first commit, through AddBlocksMany, one
// transaction for many objects; access times arrive in
// batches already (TouchAll), one transaction each. Values are
// decoded into fresh memory inside the read transaction, so nothing
// returned refers to bbolt's memory map. Records hands out records outside
// any transaction, so its callback may write to the DB.
//
// Decoded listings are also kept in memory (bounded to about 262,000
// entries, evicted arbitrarily), so a Lookup in a folder of thousands of
// files is a binary search rather than a decode. The memory copy stays
// coherent because the file is locked to this DB and every listing write
// goes through PutListing.
package index
