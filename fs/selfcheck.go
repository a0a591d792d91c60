package fs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The self-check. FUSE implementations differ in ways INIT does not
// announce: Linux takes an ENOSYS answer to FLUSH or GETXATTR as "never
// again" and answers callers itself, while gVisor hands the ENOSYS to the
// caller, so every close(2) and `ls -l` would fail. So before a mount is
// handed out, the daemon reads a probe file through it, the way a reader
// would, and adapts its answers to what it sees; and if the bytes it
// reads back are not the bytes it served, it refuses to serve at all.
//
// The probe is a file of the root under a random name (probeName), found
// by Lookup only while the self-check runs and never listed; its bytes are
// made up, served from memory through the same reply path as every read.

// quirks are the answers the mount gives instead of ENOSYS where the
// self-check found that ENOSYS would reach the caller.
type quirks struct {
	flushOK   atomic.Bool // answer FLUSH with success
	xattrNone atomic.Bool // answer GETXATTR "no such attribute", LISTXATTR none

	mu    sync.Mutex // guards notes
	notes []string   // what was found, for status and the log
}

func (q *quirks) flush() syscall.Errno {
	if q.flushOK.Load() {
		return fs.OK
	}
	return syscall.ENOSYS
}

func (q *quirks) getxattr() (uint32, syscall.Errno) {
	if q.xattrNone.Load() {
		return 0, syscall.ENODATA
	}
	return 0, syscall.ENOSYS
}

func (q *quirks) listxattr() (uint32, syscall.Errno) {
	if q.xattrNone.Load() {
		return 0, fs.OK
	}
	return 0, syscall.ENOSYS
}

func (q *quirks) note(s string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.notes = append(q.notes, s)
}

// fallbacks returns what the self-check found, for Stats.
func (m *shared) fallbacks() []string {
	m.quirks.mu.Lock()
	defer m.quirks.mu.Unlock()
	return append([]string(nil), m.quirks.notes...)
}

// probe is the self-check's file. name and data are set once in
// newProbe; active is set while the self-check runs.
type probe struct {
	name   string
	data   []byte
	active atomic.Bool
}

// probeSize is the probe file's size: several READs of the largest size,
// and a tail that ends inside a page.
const probeSize = 3<<20 + 4321

func newProbe() (*probe, error) {
	var seed [16]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("self-check: %w", err)
	}
	r := mrand.New(mrand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), 1))
	data := make([]byte, probeSize)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return &probe{name: ".s3cachefs-selfcheck-" + hex.EncodeToString(seed[8:]), data: data}, nil
}

// probeChild returns the probe's node when name is the probe's and the
// self-check runs, else nil. d is the root.
func (m *shared) probeChild(ctx context.Context, d *dirNode, name string, out *fuse.EntryOut) *fs.Inode {
	p := m.probe
	if p == nil || name != p.name || !p.active.Load() {
		return nil
	}
	n := &probeNode{m: m, data: p.data}
	n.attr(&out.Attr)
	// Never cached: the name goes away with the self-check. (go-fuse
	// takes 0 for "use the mount's timeout": 1ns is as good as none.)
	out.SetEntryTimeout(time.Nanosecond)
	out.SetAttrTimeout(time.Nanosecond)
	return d.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG})
}

// probeNode is the probe file. It answers FLUSH and the xattr calls as
// every file of the mount does.
type probeNode struct {
	fs.Inode
	m    *shared // set once at creation
	data []byte  // set once at creation
}

var (
	_ = (fs.NodeOpener)((*probeNode)(nil))
	_ = (fs.NodeGetattrer)((*probeNode)(nil))
	_ = (fs.NodeReader)((*probeNode)(nil))
	_ = (fs.NodeFlusher)((*probeNode)(nil))
	_ = (fs.NodeGetxattrer)((*probeNode)(nil))
	_ = (fs.NodeListxattrer)((*probeNode)(nil))
)

func (n *probeNode) attr(out *fuse.Attr) {
	out.Mode = syscall.S_IFREG | 0o400
	out.Size = uint64(len(n.data))
	out.Blksize = blockSize
	out.Nlink = 1
	out.Owner = fuse.Owner{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
}

func (n *probeNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.attr(&out.Attr)
	out.SetTimeout(time.Nanosecond)
	return fs.OK
}

func (n *probeNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&writeFlags != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, 0, fs.OK
}

func (n *probeNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(n.data)) {
		return fuse.ReadResultData(nil), fs.OK
	}
	return fuse.ReadResultData(n.data[off:min(off+int64(len(dest)), int64(len(n.data)))]), fs.OK
}

func (n *probeNode) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	return n.m.quirks.flush()
}

func (n *probeNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return n.m.quirks.getxattr()
}

func (n *probeNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return n.m.quirks.listxattr()
}

// selfCheckTimeout bounds the self-check: its requests are the first the
// mount serves, so only a FUSE side that loses requests or replies makes
// it wait. (gVisor before 2023 loses its FUSE device for good after a
// reply to RELEASE, which it sends expecting none; Debian 12's runsc is
// such a gVisor.)
const selfCheckTimeout = 10 * time.Second

// selfCheck runs the self-check on the mount of root at mountpoint, then
// makes the probe vanish. It returns an error when the mount must not be
// used: bytes read back differ from the bytes served, or a close or an
// xattr call fails however the mount answers.
func selfCheck(root *Root, mountpoint string) error {
	m := root.m
	m.probe.active.Store(true)
	done := make(chan error, 1)
	// A stuck request would leave this goroutine in a system call; the
	// caller then unmounts, which ends it.
	var closed atomic.Bool // the first close returned
	go func() { done <- runSelfCheck(m, filepath.Join(mountpoint, m.probe.name), &closed) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(selfCheckTimeout):
		err = fmt.Errorf("self-check: no answer through the mount within %v", selfCheckTimeout)
		if closed.Load() {
			err = fmt.Errorf("self-check: the mount stopped answering after a file was closed (this FUSE implementation loses the device after a RELEASE reply, as gVisor before 2023 does, Debian 12's runsc among them): refusing to serve; use a current gVisor")
		}
	}
	// Nothing to tell the kernel: the probe's entry was never cached.
	m.probe.active.Store(false)
	return err
}

func runSelfCheck(m *shared, path string, closed *atomic.Bool) error {
	want := m.probe.data
	// Twice: a reopen may be served differently (kept page cache).
	for range 2 {
		got, err := readProbe(m, path)
		if err != nil {
			return err
		}
		closed.Store(true)
		if err := sameBytes(got, want, 0); err != nil {
			return err
		}
	}
	if err := rangedReads(m, path, want); err != nil {
		return err
	}
	return checkXattrs(m, path)
}

// maxInterrupted bounds how often the self-check reads the probe again
// after a close(2) interrupted by a signal.
const maxInterrupted = 10

// readProbe reads the probe whole. A close that fails with ENOSYS means
// the FUSE side hands FLUSH's ENOSYS to close(2): from then on FLUSH is
// answered with success, and the read is done again.
func readProbe(m *shared, path string) ([]byte, error) {
	interrupted := 0
	for {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("self-check: open a file through the mount: %w", err)
		}
		got, rerr := io.ReadAll(f)
		cerr := f.Close()
		if rerr != nil {
			return nil, fmt.Errorf("self-check: read a file through the mount: %w", rerr)
		}
		if errors.Is(cerr, syscall.ENOSYS) && !m.quirks.flushOK.Load() {
			m.quirks.flushOK.Store(true)
			m.quirks.note("FLUSH answered with success: this FUSE side hands its ENOSYS to close(2)")
			continue
		}
		if errors.Is(cerr, syscall.EINTR) && interrupted < maxInterrupted {
			// gVisor waits for FLUSH's answer interruptibly, and the Go
			// runtime's preemption signal can cut the wait short. (Files
			// of the mount are opened FOPEN_NOFLUSH and see no FLUSH
			// there; the probe is not, to learn how FLUSH is answered.)
			interrupted++
			continue
		}
		if cerr != nil {
			return nil, fmt.Errorf("self-check: close a file of the mount: %w", cerr)
		}
		return got, nil
	}
}

// rangedReads reads ranges of the probe at random offsets, as numpy
// opening an NPZ does.
func rangedReads(m *shared, path string, want []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("self-check: open a file through the mount: %w", err)
	}
	defer f.Close()
	r := mrand.New(mrand.NewPCG(uint64(len(want)), 7))
	buf := make([]byte, 1<<20)
	for range 16 {
		off := r.Int64N(int64(len(want)))
		n, err := f.ReadAt(buf[:1+r.IntN(len(buf))], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("self-check: read a file through the mount at %d: %w", off, err)
		}
		if err := sameBytes(buf[:n], want[off:min(off+int64(n), int64(len(want)))], off); err != nil {
			return err
		}
	}
	return nil
}

// sameBytes compares bytes read at off with the bytes served there.
func sameBytes(got, want []byte, off int64) error {
	if bytes.Equal(got, want) {
		return nil
	}
	at := 0
	for at < min(len(got), len(want)) && got[at] == want[at] {
		at++
	}
	return fmt.Errorf("self-check: reads through this FUSE implementation return bytes other than those the daemon served (%d bytes read at offset %d, first difference at %d of %d): refusing to serve", len(got), off, off+int64(at), off+int64(len(want)))
}

// checkXattrs checks that the xattr calls `ls -l` makes get the answers
// they expect of a filesystem without extended attributes.
func checkXattrs(m *shared, path string) error {
	buf := make([]byte, 256)
	for attempt := 0; ; attempt++ {
		gerr := retryEINTR(func() error { _, err := unix.Getxattr(path, "user.s3cachefs.selfcheck", buf); return err })
		lerr := retryEINTR(func() error { _, err := unix.Listxattr(path, buf); return err })
		if attempt == 0 && (errors.Is(gerr, syscall.ENOSYS) || errors.Is(lerr, syscall.ENOSYS)) {
			m.quirks.xattrNone.Store(true)
			m.quirks.note("extended attributes answered as absent: this FUSE side hands ENOSYS to getxattr(2)")
			continue
		}
		if gerr == nil || !noXattr(gerr) {
			return fmt.Errorf("self-check: getxattr through the mount: %v, want no such attribute", gerr)
		}
		if lerr != nil && !noXattr(lerr) {
			return fmt.Errorf("self-check: listxattr through the mount: %w", lerr)
		}
		return nil
	}
}

// retryEINTR calls f again while it fails with EINTR, at most
// maxInterrupted times: gVisor waits for a FUSE answer interruptibly, and
// the Go runtime's preemption signal can cut the wait short. (Go's os
// package does this for open and read itself; close cannot be retried on
// the same descriptor, so readProbe reads the probe again instead.)
func retryEINTR(f func() error) error {
	err := f()
	for i := 0; i < maxInterrupted && errors.Is(err, syscall.EINTR); i++ {
		err = f()
	}
	return err
}

// noXattr reports whether err is a caller's answer for "no extended
// attributes here".
func noXattr(err error) bool {
	return errors.Is(err, syscall.ENODATA) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOTSUP)
}
