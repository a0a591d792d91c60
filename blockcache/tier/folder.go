package tier

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"s3cachefs/blockcache/internal/ctxio"
)

// Version is an S3 object version as the tier knows it: the source bucket
// and key, and the ETag and size a listing gave.
type Version struct {
	Bucket string
	Key    string
	ETag   string
	Size   int64
}

// Name is the name of v's entry in a tier: the hex SHA-256 of its bucket,
// key and ETag (what names an S3 object version), so that no key, however
// odd, names a path, and another version of the key is another entry.
func Name(v Version) string {
	h := sha256.New()
	for _, s := range []string{v.Bucket, v.Key, v.ETag} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Folder is a tier kept in a folder of a filesystem that every node mounts
// (NFS, EFS, Lustre, a Modal Volume). See doc.go for its layout. All
// methods may be called concurrently, from any number of processes and
// nodes.
type Folder struct {
	root     string        // set once: the tier's own folder under the one given
	claimTTL time.Duration // set before use (SetClaimTTL)
}

// folderLayout is the name of the tier's folder under the one the user
// gives, with its format version: another layout goes beside it.
const folderLayout = "s3cachefs-tier-v1"

// OpenFolder opens (creating if needed) the tier in dir, which must exist.
func OpenFolder(dir string) (*Folder, error) {
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("shared cache %s: %w", dir, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("shared cache %s: not a folder", dir)
	}
	f := &Folder{root: filepath.Join(dir, folderLayout), claimTTL: DefaultClaimTTL}
	for _, d := range []string{f.root, filepath.Join(f.root, "objects"), filepath.Join(f.root, "tmp"), filepath.Join(f.root, "claims"), f.trashDir()} {
		if err := os.Mkdir(d, 0o775); err != nil && !errors.Is(err, iofs.ErrExist) {
			return nil, fmt.Errorf("shared cache %s: %w", dir, err)
		}
	}
	return f, nil
}

// SetClaimTTL sets how long a claim outlives the last renewal by its node
// (DefaultClaimTTL unless set); call it before any other method. Every
// node of a tier should use the same.
func (f *Folder) SetClaimTTL(d time.Duration) { f.claimTTL = d }

// FindFolder opens the tier that dir holds, or that dir is (its
// s3cachefs-tier-v1 folder given itself), creating nothing: for tools
// that work on a tier that must already be there. No tier there gives an
// error wrapping io/fs.ErrNotExist.
func FindFolder(dir string) (*Folder, error) {
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("shared cache %s: %w", dir, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("shared cache %s: not a folder", dir)
	}
	roots := []string{filepath.Join(dir, folderLayout)}
	if filepath.Base(filepath.Clean(dir)) == folderLayout {
		roots = append(roots, dir)
	}
	for _, root := range roots {
		if fi, err := os.Stat(filepath.Join(root, "objects")); err == nil && fi.IsDir() {
			return &Folder{root: root, claimTTL: DefaultClaimTTL}, nil
		} else if err != nil && !errors.Is(err, iofs.ErrNotExist) {
			return nil, fmt.Errorf("shared cache %s: %w", dir, err)
		}
	}
	return nil, noTierError{dir}
}

// noTierError is FindFolder's error for a folder that holds no tier.
type noTierError struct{ dir string }

func (e noTierError) Error() string {
	return fmt.Sprintf("%s holds no shared cache (no %s/objects folder)", e.dir, folderLayout)
}

func (e noTierError) Unwrap() error { return iofs.ErrNotExist }

// entryPath is where the entry named name lives.
func (f *Folder) entryPath(name string) string {
	return filepath.Join(f.root, "objects", name[:2], name)
}

// Publish stores the object v as read from data (exactly v.Size bytes),
// with the CRC-32C (Castagnoli) of each of its blocks of blockSize, as v's
// entry. The entry appears whole or not at all: it is written and synced
// under a temporary name in the tier's tmp folder, then linked into place,
// which never replaces an entry already there (another node published the
// same version first; that is not an error). Publish reads data only; it
// checks nothing about it but, with verify, whatever verify checks once
// every byte is read (nothing is published when it fails): publish only
// bytes proven to be S3's.
func (f *Folder) Publish(ctx context.Context, v Version, data io.Reader, blockSize int64, sums []uint32, verify func() error) error {
	if err := checkSums(v, blockSize, sums); err != nil {
		return err
	}
	name := Name(v)
	if _, err := os.Stat(f.unprovablePath(name)); err == nil {
		return fmt.Errorf("publish %s: %w", v.Key, errMarkedUnprovable)
	}
	tmp, err := f.tempFile(name)
	if err != nil {
		return fmt.Errorf("publish %s: %w", v.Key, err)
	}
	defer os.Remove(tmp.Name()) // after the link, or instead of it
	defer tmp.Close()
	if err := writeEntry(ctx, tmp, v, data, blockSize, sums); err != nil {
		return fmt.Errorf("publish %s: %w", v.Key, err)
	}
	if verify != nil {
		if err := verify(); err != nil {
			if errors.Is(err, ErrDisproved) {
				// S3's own bytes do not give the ETag (SSE-KMS): say
				// so, so that no node claims or publishes it again.
				f.markUnprovable(name)
			}
			return fmt.Errorf("publish %s: %w", v.Key, err)
		}
	}
	dst := f.entryPath(name)
	if err := os.Mkdir(filepath.Dir(dst), 0o775); err != nil && !errors.Is(err, iofs.ErrExist) {
		return fmt.Errorf("publish %s: %w", v.Key, err)
	}
	if err := placeNew(tmp.Name(), dst); err != nil {
		return fmt.Errorf("publish %s: %w", v.Key, err)
	}
	return nil
}

// errMarkedUnprovable is Publish's error for an object a node found its
// ETag does not prove (markUnprovable).
var errMarkedUnprovable = fmt.Errorf("%w: a node found that S3's bytes do not give its ETag", ErrDisproved)

// unprovablePath is where the mark that the object named name cannot be
// proven lives: beside its entry, with a suffix that no entry has.
func (f *Folder) unprovablePath(name string) string {
	return f.entryPath(name) + unprovableSuffix
}

// unprovableSuffix names the mark beside an entry's name (in a folder or
// a bucket) that its object cannot be proven.
const unprovableSuffix = ".unprovable"

// markUnprovable records that S3's own bytes of the object named name do
// not give its ETag, although it looks like an MD5 (SSE-KMS does that):
// nodes then fetch it from S3 unclaimed, without waiting for each other,
// and nobody publishes it. A mark that cannot be made costs only that.
func (f *Folder) markUnprovable(name string) {
	path := f.unprovablePath(name)
	if err := os.Mkdir(filepath.Dir(path), 0o775); err != nil && !errors.Is(err, iofs.ErrExist) {
		return
	}
	if file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o664); err == nil {
		file.Close()
	}
}

// placeNew gives the file at tmp the name dst unless dst exists (then it
// does nothing): a hard link where the filesystem has them, else a rename
// that refuses to replace, else (a filesystem with neither, as some
// network volumes) a plain rename after a look, which may replace an entry
// published meanwhile by an equal one.
func placeNew(tmp, dst string) error {
	err := os.Link(tmp, dst)
	if err == nil || errors.Is(err, iofs.ErrExist) {
		return nil
	}
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.EMLINK) {
		return err
	}
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	if err == nil || errors.Is(err, unix.EEXIST) {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.ENOTSUP) {
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		return nil
	}
	return os.Rename(tmp, dst)
}

// tempFile creates a file of its own in the tier's tmp folder.
func (f *Folder) tempFile(name string) (*os.File, error) {
	var salt [8]byte
	rand.Read(salt[:])
	return os.OpenFile(filepath.Join(f.root, "tmp", name+"."+hex.EncodeToString(salt[:])), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o664)
}

// writeEntry writes v's entry to w (writeEntryTo), then syncs it.
func writeEntry(ctx context.Context, w *os.File, v Version, data io.Reader, blockSize int64, sums []uint32) error {
	if err := writeEntryTo(ctx, w, v, data, blockSize, sums); err != nil {
		return err
	}
	return unix.Fdatasync(int(w.Fd()))
}

// writeEntryTo writes v's bytes from data (exactly v.Size of them), then
// the trailer, to w: an entry as every kind of tier keeps it.
func writeEntryTo(ctx context.Context, w io.Writer, v Version, data io.Reader, blockSize int64, sums []uint32) error {
	n, err := io.Copy(w, io.LimitReader(ctxio.Reader(ctx, data), v.Size))
	if err != nil {
		return err
	}
	if n != v.Size {
		return fmt.Errorf("%d bytes to publish, the object has %d", n, v.Size)
	}
	_, err = w.Write(encodeTrailer(v, blockSize, sums))
	return err
}

// Entry is a tier entry opened for reading. Its bytes are not proven to be
// the object: prove them (Prover) before anything read from it is served.
type Entry struct {
	f         *Folder
	fi        iofs.FileInfo // of the file opened, to remove only it
	file      *os.File
	v         Version
	blockSize int64
	sums      []uint32
}

// Open opens the entry of v. An entry that is not there gives an error
// wrapping io/fs.ErrNotExist; one that is not a regular file, whose
// trailer does not name v, or that is cut short, one wrapping ErrDisproved,
// and it is removed. The caller closes the Entry.
func (f *Folder) Open(ctx context.Context, v Version) (EntryReader, error) {
	path := f.entryPath(Name(v))
	// Not a symbolic link, and a FIFO planted there does not block. No
	// access time from the read (Touch says when an entry was used), where
	// this user may ask so.
	flags := os.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK
	file, err := os.OpenFile(path, flags|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		file, err = os.OpenFile(path, flags, 0)
	}
	if errors.Is(err, unix.ELOOP) {
		err = fmt.Errorf("%w: a symbolic link", ErrDisproved)
		return nil, fmt.Errorf("shared cache entry of %s: %w", v.Key, errors.Join(err, f.removeFile(path, nil)))
	}
	if err != nil {
		return nil, fmt.Errorf("shared cache entry of %s: %w", v.Key, err)
	}
	e := &Entry{f: f, file: file, v: v}
	e.fi, err = file.Stat()
	if err == nil && !e.fi.Mode().IsRegular() {
		err = fmt.Errorf("%w: not a regular file (%s)", ErrDisproved, e.fi.Mode().Type())
	}
	if err == nil {
		e.blockSize, e.sums, err = readTrailer(file, e.fi.Size(), v)
	}
	if err != nil {
		file.Close()
		if errors.Is(err, ErrDisproved) {
			err = errors.Join(err, e.Remove())
		}
		return nil, fmt.Errorf("shared cache entry of %s: %w", v.Key, err)
	}
	return e, nil
}

// Remove deletes the entry (one found disproved), so that a good copy can
// be published in its place, unless the file under its name is no longer
// the one opened (another node replaced it already). A node reading the
// entry meanwhile keeps reading what it opened.
func (e *Entry) Remove() error {
	if err := e.f.removeFile(e.f.entryPath(Name(e.v)), e.fi); err != nil {
		return fmt.Errorf("remove shared cache entry of %s: %w", e.v.Key, err)
	}
	return nil
}

// removeFile removes the file at path if it is still fi (any file when fi
// is nil). A missing file is not an error.
func (f *Folder) removeFile(path string, fi iofs.FileInfo) error {
	if fi != nil {
		now, err := os.Lstat(path)
		if errors.Is(err, iofs.ErrNotExist) || (err == nil && !os.SameFile(now, fi)) {
			return nil
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return err
	}
	return nil
}

// ReadAt reads the object's bytes at off (the trailer is not part of them).
func (e *Entry) ReadAt(p []byte, off int64) (int, error) {
	if off >= e.v.Size {
		return 0, io.EOF
	}
	n, err := e.file.ReadAt(p[:min(int64(len(p)), e.v.Size-off)], off)
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// BlockSize is the block size the entry's checksums are of.
func (e *Entry) BlockSize() int64 { return e.blockSize }

// Sums are the published CRC-32C of each block, as the publisher computed
// them: anyone who can write the tier can forge them.
func (e *Entry) Sums() []uint32 { return e.sums }

// Close closes the entry's file.
func (e *Entry) Close() error { return e.file.Close() }

// The trailer follows the object's bytes in an entry file:
//
//	8 bytes  magic "s3ctier1"
//	uvarint  block size
//	uvarint  len, bytes: bucket, key, ETag (each)
//	uvarint  size
//	uvarint  count of checksums, then each as 4 bytes little endian
//	4 bytes  CRC-32C of all of the above, little endian
//	8 bytes  length of all of the above, little endian
var trailerMagic = []byte("s3ctier1")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeTrailer(v Version, blockSize int64, sums []uint32) []byte {
	b := append([]byte(nil), trailerMagic...)
	b = binary.AppendUvarint(b, uint64(blockSize))
	for _, s := range []string{v.Bucket, v.Key, v.ETag} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(v.Size))
	b = binary.AppendUvarint(b, uint64(len(sums)))
	for _, s := range sums {
		b = binary.LittleEndian.AppendUint32(b, s)
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return binary.LittleEndian.AppendUint64(b, uint64(len(b)))
}

// maxTrailer bounds a trailer read: 10,000 parts' worth of checksums of a
// 5 TB object in 1 MiB blocks, plus the names.
const maxTrailer = 4*(5<<40)/(1<<20) + 4096

// readTrailer reads and checks the trailer of an entry for v, read from r
// of size bytes (the whole entry).
func readTrailer(r io.ReaderAt, size int64, v Version) (blockSize int64, sums []uint32, err error) {
	var tail [8]byte
	if size < v.Size+8 {
		return 0, nil, fmt.Errorf("%w: %d bytes, less than the object", ErrDisproved, size)
	}
	if _, err := r.ReadAt(tail[:], size-8); err != nil {
		return 0, nil, err
	}
	n := int64(binary.LittleEndian.Uint64(tail[:]))
	if n < int64(len(trailerMagic))+4 || n > maxTrailer || size != v.Size+n+8 {
		return 0, nil, fmt.Errorf("%w: trailer of %d bytes in an entry of %d for an object of %d", ErrDisproved, n, size, v.Size)
	}
	b := make([]byte, n)
	if _, err := r.ReadAt(b, v.Size); err != nil {
		return 0, nil, err
	}
	body, sum := b[:n-4], binary.LittleEndian.Uint32(b[n-4:])
	if crc32.Checksum(body, castagnoli) != sum || string(body[:len(trailerMagic)]) != string(trailerMagic) {
		return 0, nil, fmt.Errorf("%w: damaged trailer", ErrDisproved)
	}
	return decodeTrailer(body[len(trailerMagic):], v)
}

// decodeTrailer decodes a trailer's fields and checks that they name v.
func decodeTrailer(b []byte, v Version) (blockSize int64, sums []uint32, err error) {
	bad := fmt.Errorf("%w: malformed trailer", ErrDisproved)
	next := func() (uint64, bool) {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return x, true
	}
	bs, ok := next()
	if !ok || bs == 0 || bs > 1<<30 {
		return 0, nil, bad
	}
	var names [3]string
	for i := range names {
		l, ok := next()
		if !ok || l > uint64(len(b)) {
			return 0, nil, bad
		}
		names[i], b = string(b[:l]), b[l:]
	}
	size, ok1 := next()
	count, ok2 := next()
	if !ok1 || !ok2 || count != uint64(len(b))/4 || uint64(len(b))%4 != 0 {
		return 0, nil, bad
	}
	if (Version{Bucket: names[0], Key: names[1], ETag: names[2], Size: int64(size)}) != v {
		return 0, nil, fmt.Errorf("%w: the entry names another object", ErrDisproved)
	}
	if int64(count) != (v.Size+int64(bs)-1)/int64(bs) {
		return 0, nil, bad
	}
	sums = make([]uint32, count)
	for i := range sums {
		sums[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return int64(bs), sums, nil
}
