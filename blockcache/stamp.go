package blockcache

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"s3cachefs/index"
)

// fileStamp identifies one state of a cache file. Any change of the file
// (a write, a truncate, a chmod), by any process, moves its change time,
// which no process can set back; the kernel takes it fine-grained when it
// was looked at since the last change (multigrain timestamps), so a
// change right after a stamp was taken still moves it.
type fileStamp struct {
	ino, size uint64
	ctime     unix.Timespec
}

// stampOf returns the stamp of f now.
func stampOf(f *os.File) (fileStamp, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fileStamp{}, fmt.Errorf("stat cache file: %w", err)
	}
	return fileStamp{ino: st.Ino, size: uint64(st.Size), ctime: st.Ctim}, nil
}

// newer reports whether s was taken after t (by change time).
func (s fileStamp) newer(t fileStamp) bool {
	return s.ctime.Sec > t.ctime.Sec || s.ctime.Sec == t.ctime.Sec && s.ctime.Nsec > t.ctime.Nsec
}

// noteWritten records, after the cache's own write of o's file, the file's
// stamp as the one its verified blocks match: blocks it just wrote were
// summed from the bytes written. Of concurrent writers the latest stamp
// wins. o.mu is held.
func (o *object) noteWrittenLocked(st fileStamp) {
	if st.newer(o.stamp) {
		o.stamp = st
	}
}

// checkedState is what the cache keeps of a closed object's checks.
type checkedState struct {
	verified index.Blocks // blocks checked against their sums this run
	stamp    fileStamp    // the cache file's state they were checked in
}
