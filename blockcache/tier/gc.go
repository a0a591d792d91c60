package tier

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Touch records that v's entry was just used: it sets the entry's access
// time to now and keeps its modification time, so that GC keeps the
// entries nodes read. Reads alone do not say so: shared filesystems are
// often mounted noatime or relatime. The time is the filesystem's (on NFS,
// the server's). A missing entry is not an error. Touch needs only write
// permission on the entry, not ownership.
func (f *Folder) Touch(ctx context.Context, v Version) error {
	ts := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}
	err := unix.UtimesNanoAt(unix.AT_FDCWD, f.entryPath(Name(v)), ts, 0)
	if err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("touch shared cache entry of %s: %w", v.Key, err)
	}
	return nil
}

// GCStats is what one GC run found and did. Bytes are file sizes.
type GCStats struct {
	Entries, Bytes                  int64 // entries in objects/ before
	Removed, RemovedBytes           int64 // entries moved to trash/
	Left, LeftBytes                 int64 // entries in objects/ after
	TrashDeleted, TrashDeletedBytes int64 // files unlinked from trash/ (older than grace)
	TrashKept, TrashKeptBytes       int64 // files left in trash/ (younger than grace)
	TmpDeleted, TmpDeletedBytes     int64 // files unlinked from tmp/ (untouched for grace)
}

// GC trims the tier to at most maxSize bytes of entries, least recently
// used first: an entry's use is the later of its access time (Touch) and
// its modification time (its publish). It is safe while nodes read and
// publish, from any one node (two at once do no harm either):
//
//   - An entry is not unlinked but renamed into trash/, so that a node
//     copying it keeps reading all of it, even over NFS, where a file
//     unlinked on the server gives ESTALE to a client that has it open.
//     Files that have been in trash/ for grace or longer are unlinked, by
//     this run or a later one: grace is how long a copy may take.
//   - An entry used after the walk saw it is kept.
//   - Files in tmp/ not written to for grace are unlinked: a publisher
//     killed midway leaves them. A publisher whose file is taken fails
//     its publish, which is counted and harmless.
//
// Bytes in trash/ count toward nothing: they are going away. now is the
// time trash and tmp ages are measured at. On a per-file error GC goes on
// and returns the first, with the stats of what it did. A grace of 0
// unlinks at once everything in trash/ (the entries removed by this run
// too) and tmp/: for a tier that no node is using.
func (f *Folder) GC(ctx context.Context, maxSize int64, grace time.Duration, now time.Time) (GCStats, error) {
	var st GCStats
	if err := os.Mkdir(f.trashDir(), 0o775); err != nil && !errors.Is(err, iofs.ErrExist) {
		return st, fmt.Errorf("gc: %w", err)
	}
	entries, err := f.walkEntries(ctx)
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	var fails failures
	st.Entries = int64(len(entries))
	for _, e := range entries {
		st.Bytes += e.size
	}
	st.Left, st.LeftBytes = st.Entries, st.Bytes
	slices.SortFunc(entries, func(a, b gcEntry) int {
		return cmp.Or(cmp.Compare(a.used, b.used), slices.Compare(a.name[:], b.name[:]))
	})
	for _, e := range entries {
		if st.LeftBytes <= maxSize {
			break
		}
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("gc: %w", err)
		}
		moved, err := f.trashEntry(e, now)
		fails.add(err)
		if moved {
			st.Removed++
			st.RemovedBytes += e.size
			st.Left--
			st.LeftBytes -= e.size
		}
	}
	st.TrashDeleted, st.TrashDeletedBytes, st.TrashKept, st.TrashKeptBytes, err = sweep(ctx, f.trashDir(), grace, now, trashTime, &fails)
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	st.TmpDeleted, st.TmpDeletedBytes, _, _, err = sweep(ctx, filepath.Join(f.root, "tmp"), grace, now, tmpTime, &fails)
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	return st, fails.err()
}

// trashDir is where GC moves entries before it unlinks them.
func (f *Folder) trashDir() string { return filepath.Join(f.root, "trash") }

// gcEntry is an entry as the walk saw it: kept small, as a tier may hold
// millions.
type gcEntry struct {
	name [32]byte // Name, decoded
	size int64
	used int64 // unix nanoseconds: the later of atime and mtime
}

func (e gcEntry) hexName() string { return hex.EncodeToString(e.name[:]) }

// walkEntries lists the entries in objects/NN/. Files that are not named as
// entries are not ours (nor are NFS's .nfsXXXX files), and are left alone.
func (f *Folder) walkEntries(ctx context.Context) ([]gcEntry, error) {
	dirs, err := os.ReadDir(filepath.Join(f.root, "objects"))
	if err != nil {
		return nil, err
	}
	var out []gcEntry
	for _, d := range dirs {
		if !d.IsDir() || len(d.Name()) != 2 {
			continue
		}
		err := eachFile(ctx, filepath.Join(f.root, "objects", d.Name()), func(name string, st *unix.Stat_t) {
			var e gcEntry
			if len(name) != 64 || !strings.HasPrefix(name, d.Name()) {
				return
			}
			if _, err := hex.Decode(e.name[:], []byte(name)); err != nil {
				return
			}
			e.size, e.used = st.Size, entryUsed(st)
			out = append(out, e)
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func entryUsed(st *unix.Stat_t) int64 {
	return max(st.Atim.Nano(), st.Mtim.Nano())
}

// eachFile calls fn with the name and lstat of each regular file in dir
// whose name does not start with a dot, reading the folder in batches.
// Files that vanish meanwhile are skipped.
func eachFile(ctx context.Context, dir string, fn func(name string, st *unix.Stat_t)) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		names, err := d.Readdirnames(1024)
		for _, name := range names {
			if strings.HasPrefix(name, ".") {
				continue
			}
			var st unix.Stat_t
			if err := unix.Fstatat(int(d.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(err, iofs.ErrNotExist) {
				continue
			} else if err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
			}
			if st.Mode&unix.S_IFMT == unix.S_IFREG {
				fn(name, &st)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
	}
}

// trashEntry moves e into trash/ as NAME.STAMP.RANDOM, STAMP the unix
// nanoseconds of now, unless it was used (or replaced) since the walk saw
// it, or is gone. It reports whether it moved it.
func (f *Folder) trashEntry(e gcEntry, now time.Time) (bool, error) {
	name := e.hexName()
	src := f.entryPath(name)
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); errors.Is(err, iofs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("%s: %w", src, err)
	}
	if entryUsed(&st) > e.used {
		return false, nil
	}
	var salt [8]byte
	rand.Read(salt[:])
	dst := filepath.Join(f.trashDir(), name+"."+strconv.FormatInt(now.UnixNano(), 10)+"."+hex.EncodeToString(salt[:]))
	if err := os.Rename(src, dst); errors.Is(err, iofs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, nil
}

// trashTime is when a file was moved into trash/: the later of the stamp
// in its name and its change time (which a rename sets on most
// filesystems), so that a clock behind on either side only keeps it
// longer.
func trashTime(name string, st *unix.Stat_t) int64 {
	t := st.Ctim.Nano()
	if parts := strings.Split(name, "."); len(parts) == 3 {
		if stamp, err := strconv.ParseInt(parts[1], 10, 64); err == nil {
			t = max(t, stamp)
		}
	}
	return t
}

// tmpTime is when a file in tmp/ was last written.
func tmpTime(_ string, st *unix.Stat_t) int64 { return st.Mtim.Nano() }

// sweep unlinks the files in dir whose time (as since says) is grace or
// more before now, and counts those it unlinked and those it kept. A grace
// of 0 unlinks them all, however the filesystem's clock stands to now.
func sweep(ctx context.Context, dir string, grace time.Duration, now time.Time, since func(string, *unix.Stat_t) int64, fails *failures) (deleted, deletedBytes, kept, keptBytes int64, err error) {
	cutoff := now.Add(-grace).UnixNano()
	err = eachFile(ctx, dir, func(name string, st *unix.Stat_t) {
		if grace > 0 && since(name, st) > cutoff {
			kept++
			keptBytes += st.Size
			return
		}
		if err := os.Remove(filepath.Join(dir, name)); err == nil {
			deleted++
			deletedBytes += st.Size
		} else if !errors.Is(err, iofs.ErrNotExist) {
			fails.add(err)
		}
	})
	return deleted, deletedBytes, kept, keptBytes, err
}

// failures keeps the first of the per-file errors of a GC run, and counts
// them.
type failures struct {
	first error
	n     int
}

func (fl *failures) add(err error) {
	if err == nil {
		return
	}
	if fl.first == nil {
		fl.first = err
	}
	fl.n++
}

func (fl *failures) err() error {
	if fl.first == nil {
		return nil
	}
	return fmt.Errorf("gc: %d files could not be removed; the first: %w", fl.n, fl.first)
}
