// Package prefetch runs s3cachefs's folder-level operations on the block
// store (package blockcache): prefetch jobs, verify, evict and unpin. It
// uses only the store's exported API (Cache.Warm, Scrub, DropVersion,
// EvictObject, FilePath, FreeSpace) and the index's jobs, pins and
// records; it holds no lock of the store's. The control API's JSON shapes
// (Progress, FolderProgress, FolderReport) are declared here.
//
// # Jobs
//
// Jobs.Start plans a job for some mount-relative paths: every folder under
// them is listed afresh through the Tree (whatever the metadata TTL), and
// the job's objects, their sizes and how much of them is cached already
// are known before a byte is fetched. The job is then recorded in the
// index (state running), its paths are pinned, and a goroutine fetches
// them with Cache.Warm: at most JobOptions.Objects objects at a time (256
// by default), and at most JobOptions.Bytes of them, each object counting
// its size up to what Warm keeps in flight of one object (by default 8
// such windows: 8 large objects, as many small ones as Objects allows).
// Small objects need many in flight: each spends longer syncing and
// committing than on its GET, and the cache's group commit records the
// blocks of all those that finish together in one index transaction. The
// cache's MaxFetches still bounds the GETs in flight. Warm fetches at background
// priority: a reader of a file the job has not reached yet jumps the queue.
// An object that keeps failing is noted and the others go on; the job then
// ends failed with the keys. An object replaced in S3 since the plan (its
// fetch fails with index.ErrStale) is looked up afresh and the version S3
// holds now is fetched instead (the job's path pins it too).
//
// # The fit check
//
// A job that cannot fit fails at once, before anything is recorded or
// fetched, with ErrNoSpace and the sizes: when its objects together exceed
// the cache limit (JobOptions.MaxBytes), or when what is not cached yet
// exceeds the free space of the cache filesystem less JobOptions.MinFree.
//
// # Pins
//
// A job pins its paths, under its ID, before it fetches: the S3 key of a
// file, the key prefix of a folder (index.DB.Pin). Every object whose key
// is under a pinned path is pinned, including a version that replaced one
// the job fetched and objects added to the folder later; eviction skips
// them, so what a prefetch brought stays on SSD while the trainer needs
// it. Pins outlive the job: a job that is done keeps them until Unpin (or
// Evict) releases its paths; Cancel releases the job's own pins. Unpin and
// Evict of a path release the pins on that path and on paths under it,
// of every job; a path inside a pinned folder (train/a when a job pins
// train) is refused, before anything is dropped, with an error naming the
// job and the folder: unpin the folder, or cancel the job. A pinned
// object's record can still be dropped when S3 no longer holds that
// version; the pin stays on its path.
//
// # Resume and lifetimes
//
// Jobs.Close cancels the running jobs and waits for them; they stay
// recorded as running, and Jobs.Resume, at the next start, plans and runs
// them again (pinning their paths again). A
// job that can never run as asked (a path gone, too big now) is recorded
// failed; one that cannot be planned for now (S3 unreachable) stays queued
// for the next start, and Cancel still stops it.
//
// Ended jobs (done, failed, cancelled) are not kept for ever: List shows
// every running job and the newest KeepEnded (16) ended ones. Each time a
// job ends, older ended jobs are forgotten in memory (Get then answers
// from the index's record, state only), and their records are deleted
// from the index once no pin is left under their ID (the pins of a done
// job are filed under it, so its record stays until they are released).
//
// # Goroutines
//
// Each running job is one goroutine, started by Start or Resume and
// stopped by Cancel (which waits for it) or Close (which cancels every job
// and waits for them with the Jobs' WaitGroup); it waits in turn for its
// bounded pool (errgroup, JobOptions.Objects, and a weighted semaphore
// of JobOptions.Bytes) of Warm calls before it
// records how the job ended. Verify, Evict and Unpin run on the caller's
// goroutine and context.
//
// # Verify, evict, unpin
//
// Verify lists paths afresh and compares each object with the cache:
// cached complete, partial, stale (an older version is cached) or
// missing. A deep verify reads every cached block back against its
// CRC-32C (Cache.Scrub forgets damaged ones) and hashes each complete
// file whose ETag is a plain MD5; a file that fails is dropped. Evict
// drops the cached data of the objects under paths that no reader has
// open, and the pins on and under the paths; Unpin only releases the
// pins (see Pins for a path inside a pinned folder).
package prefetch
