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
//	meta      "schema" -> uvarint SchemaVersion (2)
//	          "usage"  -> counters of the records (see below)
//	listings  "/" + S3 prefix -> folder bucket   (root prefix "" is key "/")
//	          folder bucket: "\x00" -> folder info value
//	                         entry name -> entry value (one key per entry)
//	records   cache ID -> record value
//	access    LastAccess (12 bytes) + cache ID -> disk usage + S3 key
//	jobs      job ID -> job value
//	pathpins  job ID + "\x00" + path -> objects planned under path
//	current   S3 key -> current value
//
// Open creates any missing bucket, and brings a file of an older schema
// version up to this one in the transaction that opens it (migrate.go):
// schema 1 had no counters, no access bucket, and pins per object in
// buckets pins and jobpins; the upgrade builds the first two from a walk
// of the records (records_migrate.go), turns each job's object pins into
// pins on its paths, and drops current entries whose record is gone.
//
// A folder's entries are keys of its own bucket, so a Lookup is one Get and
// a readdir is a cursor walk in name order (bbolt keys sort bytewise, as
// strings.Compare; folders and files share the key space, since a name is
// one or the other). The folder info key "\x00" sorts before every name
// and can be no name (names have no control characters). A re-list merges
// S3's answer with the stored keys as it arrives, a page at a time
// (relist.go: a Lister that is a PageLister, as s3store is; others are
// merged whole), and writes only what changed, at most 32,768 writes per
// transaction, so it holds a page, the changes not yet written and the
// folder's subfolder names, never the whole answer. Files come in S3's key
// order, which is their name order, and are merged as they come; folders
// (common prefixes, which sort as "name/") are merged once the answer is
// complete. Every transaction that changes an entry bumps the folder's
// generation, and every one but the last stores ListedAt zero, so that a
// crash or a reader between them sees the folder as invalidated (listed
// again on use), never as fresh and half-written; a re-list that changes
// fewer than 32,768 entries writes once, at the end, so a LIST that fails
// midway leaves the old listing served. Only writers of one folder's
// listing wait for each other (a lock per folder): a minute-long LIST of a
// big folder holds up no other folder's.
//
// Schema 1 stored each folder as one listing value under the same key
// ("/" + prefix: ListedAt, the folder names, then each file's key, size,
// ETag and LastModified). Open upgrades such a file in one transaction:
// each value becomes a folder bucket with the same entries and ListedAt
// and generation 1; a value that does not decode is dropped (the folder is
// listed again on its next use).
//
// # Counters and access order
//
// Every write of a record (AddBlocksSums, RemoveBlock, TouchAll,
// LoadRecords) and every removal (DeleteRecord(s), ResetRecord) updates,
// in the same transaction, meta's usage value (records, complete records,
// present bytes and disk bytes, Record.DiskUsage: each block in whole
// 4 KiB filesystem blocks) and the record's access entry, keyed by its
// LastAccess (seconds since the year 1 and nanoseconds, big endian) and
// ID, so that a cursor reads records oldest first. The value holds the
// record's disk usage and S3 key, so eviction picks victims (Oldest) and
// checks their pins without decoding a record. Stats reads the counters:
// nothing but Check and the upgrade walks every record. A new record with
// no LastAccess is dated when it is made, so what was fetched just now is
// not the first to go.
//
// # Pins
//
// A pin (a prefetch job needs objects kept; eviction skips pinned
// objects) is on a path: an S3 key (a file) or a key prefix without its
// trailing "/" (a folder; "" is the whole bucket). An object is pinned
// while some pin's path Covers its key: the path is the key, or a folder
// above it. Pins are few (a job pins the paths it was asked for, however
// many objects are under them), so all of them are also kept in memory,
// loaded at Open and changed after each write commits: PinnedKey is a map
// lookup per folder level of the key, never an index read. Pin needs the
// job stored; DeleteJob and CancelJob drop the job's pins in the same
// transaction as the job's change, so no pin outlives its job, and
// PruneJobs keeps a job that still holds pins. UnpinPaths drops the pins
// on and under some paths, of any job, and refuses, dropping nothing, a
// path that a pin above it covers (ErrPinnedAbove, naming the job and its
// path): a part of a pinned folder cannot be released alone, and quietly
// narrowing the folder's pin would surprise whoever pinned it. Records
// and pins are independent: deleting or resetting a record leaves the
// pins, which protect whatever is cached under them next. A write of
// several steps that must not be seen halfway is one DB method, never a
// sequence of calls.
//
// current maps each S3 key to the cache ID of the version readers use.
// SetCurrent returns the ID it replaces exactly once, for the caller to
// drop. DeleteRecord drops the key's entry with the record when it still
// names it, so current holds no more keys than the records; ResetRecord
// keeps it (the same version is fetched again).
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
// Keys are not repeated inside values. An entry value is a kind byte
// (folder 0, file 1), then for a file its size, ETag and LastModified (its
// key is the folder's prefix plus the name). A folder info value is
// ListedAt, the change generation (1 for the first listing, never 0) and
// the number of entries. A record value is key, version, size, block
// size, LastAccess, the number of blocks and the presence bitmap (bit i%8 of
// byte i/8 is block i); in version 2 it is followed by each block's CRC-32C
// (Castagnoli), 4 bytes little endian per block, 0 for "not known", recorded
// in the same transaction as the block's presence (AddBlocksSums). A record
// without checksums (written before they existed) is version 1, and its
// blocks are read as blocks without a sum. A job value is Created, the state byte (running 0, done 1,
// failed 2, cancelled 3), the paths, the error text and the failed keys. A
// current value is the cache ID. The usage value is the codec version,
// then the four counters as varints; a pathpins value is the object count
// as a varint; an access value is the disk usage as a varint, then the key.
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
// Within CatalogOptions.TTL, ReadDir, Generation and Lookup are answered
// from the store with no S3 request, and a name missing from the listing
// is io/fs.ErrNotExist at once.
//
// Stale-while-revalidate: for one further TTL after that (a listing aged
// TTL to 2×TTL) the stored listing is still served at once, and the first
// such use starts one background refresh of the folder (owned by the
// Catalog: counted in its WaitGroup, cancelled by Close; its failure is
// logged and the next use within the bound tries again). Past 2×TTL, or
// invalidated (Invalidate, or a re-list half written), or missing, a
// listing is listed again (one Lister.List call, shared by concurrent
// callers of the same folder) and stored before it is used: the caller
// waits. A negative TTL never refreshes a stored listing; a zero TTL lists
// on every use and every caller waits. A listing dated in the future (the
// clock went back) counts as expired. A failed listing is not stored and
// its error is returned wrapped; past the bound an older stored listing is
// not served in its place. The shared Lister call runs detached from the callers'
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
// one writer at a time. Adding blocks is the frequent write: blockcache
// gathers the adds of concurrent fetches itself and records them, with the
// current version of each object's first commit, through AddBlocksMany,
// one transaction for many objects; access times arrive in
// batches already (TouchAll), one transaction each. Values are
// decoded into fresh memory inside the read transaction, so nothing
// returned refers to bbolt's memory map. Records hands out records outside
// any transaction, so its callback may write to the DB.
//
// No decoded listing is kept in memory: a Lookup reads one entry, and
// ReadDirPage one page, in a read transaction of its own, so memory does
// not grow with the folders seen. Re-lists of one folder are serialised
// by that folder's lock, held from before S3 is asked until the last write
// (relist.go), so that no other re-list lands between a comparison and its
// write; re-lists of other folders run meanwhile. Invalidate takes no lock:
// it stores ListedAt zero at once and marks the folder, and a re-list
// under way stores zero too at its end. ReadDirPage pages resume after the last name returned and report
// the generation they were read at: pages of one generation are of one
// listing, and a name that did not change is never skipped or repeated.
package index
