// Package api holds the wire types of the s3cachefs control socket: the
// JSON a daemon answers with and the requests the commands send. The
// daemon (cmd/s3cachefs) and the end-to-end tests (test/) both use them, so
// that the shape is written down once. `status --json`, `verify --json` and
// `prefetch --json` print these same shapes.
//
// The socket speaks HTTP/1.1 over a unix socket of mode 0600 (one per
// mount, named by a hash of its mountpoint). Its requests:
//
//	GET  /status                 → Status
//	POST /shutdown[?force=1]     unmount and stop → Result{"stopped"}
//	POST /prefetch   PathsRequest → Job (the job started)
//	POST /verify     PathsRequest → []FolderReport
//	POST /evict      PathsRequest → EvictReply
//	POST /unpin      PathsRequest → UnpinReply
//	GET  /jobs                   → []Job
//	GET  /jobs/{id}              → Job
//	POST /jobs/{id}/cancel       → Result{"cancelled"}
//
// Every failed request answers a 4xx or 5xx status with an Error.
package api

// Status is the answer to GET /status; `status --json` prints it as is.
type Status struct {
	Source          string `json:"source"`
	Mountpoint      string `json:"mountpoint"`
	CacheDir        string `json:"cache_dir"`
	FuseFD          int    `json:"fuse_fd,omitempty"` // N of a handed-over /dev/fd/N
	PID             int    `json:"pid"`
	UptimeSeconds   int64  `json:"uptime_seconds"`
	Objects         int    `json:"objects"`
	CompleteObjects int    `json:"complete_objects"`
	CachedBytes     int64  `json:"cached_bytes"`
	UsedBytes       int64  `json:"used_bytes"`
	CacheLimit      int64  `json:"cache_limit"`
	Eviction        string `json:"eviction"` // "lru" or "none" (--eviction)
	FreeBytes       int64  `json:"free_bytes"`
	CacheFull       bool   `json:"cache_full"`
	Evictions       int64  `json:"evictions"`
	UncachedReads   int64  `json:"uncached_reads"`
	CorruptBlocks   int64  `json:"corrupt_blocks"`
	Hits            int64  `json:"hits"`
	Misses          int64  `json:"misses"`
	BytesFromS3     int64  `json:"bytes_from_s3"`
	BytesFromSSD    int64  `json:"bytes_from_ssd"`
	FetchErrors     int64  `json:"fetch_errors"`
	OpenFiles       int64  `json:"open_files"`
	FileNodes       int    `json:"file_nodes"` // file inodes the kernel holds (bounded)
	S3GetRequests   int64  `json:"s3_get_requests"`
	S3ListRequests  int64  `json:"s3_list_requests"`
	// PinnedObjects is how many objects the pinned paths held when their
	// jobs pinned them (a path under another pinned path counts once).
	PinnedObjects int `json:"pinned_objects"`
	// PinnedPaths are the paths prefetch jobs pin, as S3 keys or key
	// prefixes: an object is pinned while its key is under one of them.
	PinnedPaths []PinnedPath `json:"pinned_paths,omitempty"`
	// ReadMode is "passthrough" when complete files are read by the
	// kernel straight from SSD, else "daemon".
	ReadMode         string `json:"read_mode"`
	PassthroughOff   string `json:"passthrough_off,omitempty"` // why ReadMode is "daemon"
	PassthroughOpens int64  `json:"passthrough_opens"`
	DaemonOpens      int64  `json:"daemon_opens"`
	// BlocksChecked counts blocks read back from SSD and compared with
	// their CRC-32C: every read through the daemon checks its blocks.
	BlocksChecked int64 `json:"blocks_checked"`
	// BlocksFresh counts blocks served from memory right after their
	// fetch, to a reader that had the file open meanwhile.
	BlocksFresh int64 `json:"blocks_fresh"`
	// IndexCommits counts the index's write transactions (each an fsync
	// of index.db) and CacheSyncs the fdatasyncs of cache files, since
	// the daemon started.
	IndexCommits int64 `json:"index_commits"`
	CacheSyncs   int64 `json:"cache_syncs"`
	// SharedCache is the folder of the shared tier ("" for none). From
	// it: TierBytes copied, TierMisses objects it did not hold,
	// TierRejected entries refused (not proven to be the object, or
	// unreadable; then fetched from S3); to it: Published objects,
	// PublishErrors failed, PublishDropped not queued (queue full);
	// claims by prefetches: ClaimsWon (fetched from S3 for all nodes),
	// ClaimsWaited (another node was fetching), ClaimErrors (claims did
	// not work; fetched unclaimed).
	SharedCache    string `json:"shared_cache,omitempty"`
	TierBytes      int64  `json:"shared_cache_bytes"`
	TierMisses     int64  `json:"shared_cache_misses"`
	TierRejected   int64  `json:"shared_cache_rejected"`
	Published      int64  `json:"shared_cache_published"`
	PublishErrors  int64  `json:"shared_cache_publish_errors"`
	PublishDropped int64  `json:"shared_cache_publish_dropped"`
	ClaimsWon      int64  `json:"shared_cache_claims_won"`
	ClaimsWaited   int64  `json:"shared_cache_claims_waited"`
	ClaimErrors    int64  `json:"shared_cache_claim_errors"`
	// FUSE is what the FUSE side announced at INIT; Fallbacks what the
	// mount's self-check found it does unlike Linux, and how the mount
	// answers instead.
	FUSE      string   `json:"fuse"`
	Fallbacks []string `json:"fallbacks,omitempty"`
	Prefetch  []Job    `json:"prefetch"`
	Memory    Memory   `json:"memory"`
	// Error says why the index could not be read; the figures that come
	// from it (Objects, CompleteObjects, CachedBytes) are then 0 because
	// they are unknown.
	Error string `json:"error,omitempty"`
}

// Memory is what the daemon sized from its memory limit.
type Memory struct {
	CgroupLimit     int64  `json:"cgroup_limit"` // bytes; 0: none found
	CgroupLimitFile string `json:"cgroup_limit_file,omitempty"`
	// GoMemoryLimit is Go's memory limit, in bytes (0: none), set from
	// the cgroup limit ("cgroup") or by $GOMEMLIMIT ("GOMEMLIMIT").
	GoMemoryLimit     int64  `json:"go_memory_limit"`
	GoMemoryLimitFrom string `json:"go_memory_limit_from,omitempty"`
	// MaxFetches and PrefetchObjects as used, and where each came
	// from: "flag", "default", or "cgroup" when the limit lowered it.
	MaxFetches          int    `json:"max_fetches"`
	MaxFetchesFrom      string `json:"max_fetches_from"`
	PrefetchObjects     int    `json:"prefetch_objects"`
	PrefetchObjectsFrom string `json:"prefetch_objects_from"`
}

// Job is a snapshot of one prefetch job.
type Job struct {
	ID string `json:"id"`
	// State is "running", "done", "failed" or "cancelled".
	State          string   `json:"state"`
	Error          string   `json:"error,omitempty"`
	Failed         []string `json:"failed,omitempty"` // keys that could not be fetched
	ElapsedSeconds float64  `json:"elapsed_seconds"`
	Folders        []Folder `json:"folders"`
	// Shard is "I/N" for a job of one shard of the paths' objects
	// (prefetch --shard), "" for all of them.
	Shard string `json:"shard,omitempty"`
}

// Folder is the state of one path of a job.
type Folder struct {
	Path          string `json:"path"` // relative to the mount root; "" is the root
	Files         int64  `json:"files"`
	FilesDone     int64  `json:"files_done"`
	Bytes         int64  `json:"bytes"`
	BytesDone     int64  `json:"bytes_done"`
	CachedAtStart int64  `json:"cached_at_start"` // bytes already cached when the job started
}

// Totals sums the folders of j (Path "").
func (j Job) Totals() Folder {
	var t Folder
	for _, f := range j.Folders {
		t.Files += f.Files
		t.FilesDone += f.FilesDone
		t.Bytes += f.Bytes
		t.BytesDone += f.BytesDone
		t.CachedAtStart += f.CachedAtStart
	}
	return t
}

// FolderReport compares one path's objects in S3 with the cache: one
// element of the answer to POST /verify.
type FolderReport struct {
	Path      string   `json:"path"`
	InS3      int64    `json:"in_s3"`
	Bytes     int64    `json:"bytes"`
	Cached    int64    `json:"cached"`            // every block on SSD
	Partial   int64    `json:"partial"`           // some blocks on SSD
	Stale     int64    `json:"stale"`             // an older version is cached, not S3's
	Missing   int64    `json:"missing"`           // nothing cached
	Checked   int64    `json:"checked"`           // deep: complete files whose MD5 matched the ETag
	Unchecked int64    `json:"unchecked"`         // deep: complete files with a multipart ETag
	Corrupt   []string `json:"corrupt,omitempty"` // "key@offset" per damaged block, "key (MD5)" per file failing its ETag
}

// PathsRequest is the body of the requests that act on paths: clean paths
// relative to the mount root ("" is the root), at least one.
type PathsRequest struct {
	Paths []string `json:"paths"`
	Deep  bool     `json:"deep,omitempty"` // verify only: read back and check cached bytes
	// prefetch only: fetch the objects of shard Shard of Shards
	// (0 <= Shard < Shards; both 0: every object).
	Shard  int `json:"shard,omitempty"`
	Shards int `json:"shards,omitempty"`
}

// EvictReply is the answer to POST /evict.
type EvictReply struct {
	Dropped int `json:"dropped"` // objects whose data was dropped
	Busy    int `json:"busy"`    // objects kept because they are open
}

// UnpinReply is the answer to POST /unpin.
type UnpinReply struct {
	Objects int `json:"objects"` // objects whose pins were released
}

// Result is the answer to requests that only succeed or fail: "stopped"
// for /shutdown, "cancelled" for /jobs/{id}/cancel.
type Result struct {
	Result string `json:"result"`
}

// Error is the body of every failed request.
type Error struct {
	Error string `json:"error"`
}

// PinnedPath is one path a prefetch job pins.
type PinnedPath struct {
	Job     string `json:"job"`
	Path    string `json:"path"`    // S3 key or key prefix, no trailing "/"
	Objects int64  `json:"objects"` // objects under it when it was pinned
}
