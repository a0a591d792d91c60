// Package tier is s3cachefs's shared cache tier (issue 14): object
// versions kept on a store that every node of a cluster reaches, so that
// a node missing an object copies it from there instead of fetching it
// from S3 again. Shared is the tier as the block cache uses it
// (blockcache.Tier, `--shared-cache DIR`): the cache copies an object of
// which it has nothing from the tier through Shared.Fill, which proves it
// on the way, and publishes what it fetched from S3 once complete through
// Shared.Publish. Where the tier lives is a Store: a Folder on a shared
// filesystem (`--shared-cache DIR`) or a Bucket (`--shared-cache
// s3://bucket/prefix`). Both keep entries in the same format and claim
// objects (so that nodes prefetching at once fetch each from S3 about
// once) with a create-if-absent. Folder.GC trims a folder tier (`s3cachefs
// shared gc`); a bucket tier is trimmed by a lifecycle rule.
//
// # Claims
//
// So that nodes prefetching at once fetch each object from S3 about once,
// a node about to fetch an object the tier lacks claims it first
// (Store.Claim: claims/NAME created with O_EXCL in a folder, with
// If-None-Match: * in a bucket), renews the claim every
// quarter of its TTL while it fetches, and releases it once the object is
// published. A node that finds the claim taken waits (AwaitClaim) for the
// entry, for the claim to go, or for it to expire: no renewal seen for the
// TTL by the waiter's own clock, so that the nodes' clocks need not agree.
// The waiter breaks an expired claim (renamed away first, so that of the
// nodes breaking it at once one does) and claims the object itself.
//
// # Trust
//
// Anyone who can write the tier can put anything in it; nothing read from
// it is served before it is proven to be S3's object. A Prover hashes the
// bytes as they are copied and checks them against the ETag S3's listing
// gave: the MD5 of the whole object for a single-part upload, or the MD5
// of the parts' MD5s for a multipart one, for the part sizes common
// uploaders use (the AWS CLI's 8 MiB, doubled past 10,000 parts; 16 and 5
// MiB; the smallest whole number of MiB) that give the ETag's part count.
// An ETag that is neither (SSE-KMS, a server's own scheme) proves nothing
// but the size: the caller decides whether the entry's published CRC-32C
// table is enough, knowing that whoever wrote the entry wrote the table.
//
// # Folder layout
//
// A folder tier lives in DIR/s3cachefs-tier-v1/ (another layout would go
// beside it):
//
//	objects/NN/NAME   one entry per object version: the object's bytes,
//	                  then a trailer (folder.go: the block size, bucket,
//	                  key, ETag, size and each block's CRC-32C, with a
//	                  CRC-32C of its own and its length last)
//	tmp/NAME.RANDOM   entries being written (and expired claims on their
//	                  way out)
//	claims/NAME       the claim on NAME of the node fetching it from S3
//	trash/NAME.STAMP.RANDOM
//	                  entries GC took out of objects/ (STAMP: when, in
//	                  unix nanoseconds), unlinked once there for the grace
//
// NAME is the hex SHA-256 of bucket, key and ETag (Name), never the
// key, and NN its first two characters. An entry is written and synced in
// tmp/, then hard-linked into objects/, which never replaces an entry
// already there (a node publishing the same version second changes
// nothing), so no node ever opens a half-written entry. Entries are never
// changed in place; a disproved one is removed (Remove) so that a good copy
// can take its name. Folders and files are created group-writable (0775,
// 0664, less the umask): nodes may run as different users of one group.
//
// # Bucket layout
//
// A bucket tier lives under PREFIX/s3cachefs-tier-v1/ of its bucket
// (Objects: what it needs of the bucket; s3store.Store has it):
//
//	objects/NN/NAME   one entry per object version, as in a folder
//	claims/NAME       a claim: "HOST PID TOKEN N" (N counts renewals)
//
// Publish writes the entry (bytes, then trailer) to an unlinked file in
// BucketOptions.TempDir, runs verify, then sends it in one PutObject with
// If-None-Match: *, so it appears whole or not at all, never replacing
// another node's: a PutObject cannot be taken back once its body is sent,
// so the bytes are proven before. An entry past 5 GiB goes as a multipart
// upload, completed with If-None-Match: * (s3store.Store.Create). Open HEADs the entry and reads every range of it
// (the trailer, then the bytes in 8 MiB ranges, each read starting the
// fetch of the next three, shared by readers copying different parts at
// once, at most 12 held) pinned to the ETag the HEAD gave, so the entry cannot
// change under a copy; a disproved entry is deleted with If-Match on that
// ETag, sparing a good copy another node put under the name meanwhile (on
// servers that honour If-Match on deletes; others delete whatever is
// there, which costs a publish, never a wrong byte).
//
// A claim is created with If-None-Match: * (412: another node holds it),
// put again unconditionally every quarter of the TTL while held, with N
// one more, so that its ETag and time change; AwaitClaim HEADs entry and
// claim, takes a change of either for life by its own clock, and deletes
// a claim unchanged for the TTL with If-Match on the ETag seen. Release
// reads the claim and deletes it (If-Match) if it is still this one's.
// Between a renewal's look and its PUT another node may break the claim
// and make its own, which the PUT then replaces: both fetch the object
// from S3, never worse. Touch does nothing: the lifecycle rule trims by
// age.
//
// # Garbage collection
//
// GC keeps the entries under a size, least recently used first: an
// entry's use is the later of its mtime (its publish) and its atime, which
// the cache sets through Touch after each copy, since shared filesystems
// are often mounted noatime. GC never unlinks an entry in objects/: it
// renames it into trash/, and unlinks files there once they have been
// there for a grace (15 minutes from the command). A node copying the
// entry meanwhile keeps its open file and reads all of it: on NFS an open
// file unlinked by another client gives ESTALE, a renamed one does not.
// A copy that takes longer than the grace may fail, and is then fetched
// from S3. GC also unlinks files in tmp/ not written to for the grace (a
// publisher killed midway), never objects/NN folders (a publisher may be
// about to link into one). Any number of GC runs may overlap, with each
// other and with nodes reading and publishing.
package tier
