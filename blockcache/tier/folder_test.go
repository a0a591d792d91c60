package tier

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"s3cachefs/blockcache/internal/cachetest"
)

// blockSums is the CRC-32C of each block of data.
func blockSums(data []byte, bs int) []uint32 {
	var out []uint32
	for off := 0; off < len(data); off += bs {
		out = append(out, crc32.Checksum(data[off:min(off+bs, len(data))], castagnoli))
	}
	return out
}

func testVersion(data []byte) Version {
	return Version{Bucket: "b", Key: "train/x.npz", ETag: s3ETag(data, 0), Size: int64(len(data))}
}

func readEntry(t *testing.T, e EntryReader, size int64) []byte {
	t.Helper()
	got, err := io.ReadAll(io.NewSectionReader(e, 0, size+10))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// A published entry opens as the object's bytes and checksums, and only
// under its own version: another ETag or size of the key finds nothing.
func TestFolderPublishOpen(t *testing.T) {
	f, err := OpenFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := cachetest.RandBytes(3, 3*mib+7)
	v := testVersion(data)
	sums := blockSums(data, mib)
	if err := f.Publish(context.Background(), v, bytes.NewReader(data), mib, sums, nil); err != nil {
		t.Fatal(err)
	}
	e, err := f.Open(context.Background(), v)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got := readEntry(t, e, v.Size); !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes back, not the %d published", len(got), len(data))
	}
	if e.(*Entry).BlockSize() != mib || !slices.Equal(e.(*Entry).Sums(), sums) {
		t.Errorf("block size %d and %d sums, want %d and %d", e.(*Entry).BlockSize(), len(e.(*Entry).Sums()), mib, len(sums))
	}
	for _, other := range []Version{{v.Bucket, v.Key, "other", v.Size}, {"c", v.Key, v.ETag, v.Size}, {v.Bucket, "train/y.npz", v.ETag, v.Size}} {
		if _, err := f.Open(context.Background(), other); !errors.Is(err, iofs.ErrNotExist) {
			t.Errorf("Open(%+v): %v, want ErrNotExist", other, err)
		}
	}
	// The same version with another size is not this entry.
	if _, err := f.Open(context.Background(), Version{v.Bucket, v.Key, v.ETag, v.Size + 1}); !errors.Is(err, ErrDisproved) {
		t.Errorf("Open with another size: %v, want ErrDisproved", err)
	}
}

// Nodes publishing the same version at once leave one whole entry and no
// error; a publish cut short, or whose verify fails, leaves none: in a
// folder (and no temporary file behind) and in a bucket alike.
func TestPublishRaceAndFailure(t *testing.T) {
	dir := t.TempDir()
	folder, err := OpenFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	bucket, _ := newTestBucket(t, 0)
	for name, st := range map[string]Store{"folder": folder, "bucket": bucket} {
		t.Run(name, func(t *testing.T) { testPublishRaceAndFailure(t, st) })
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, folderLayout, "tmp")); len(tmp) != 0 {
		t.Errorf("temporary files left in the folder: %v", tmp)
	}
}

func testPublishRaceAndFailure(t *testing.T, st Store) {
	ctx := context.Background()
	data := cachetest.RandBytes(4, 2*mib)
	v := testVersion(data)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = st.Publish(ctx, v, bytes.NewReader(data), mib, blockSums(data, mib), nil) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("publisher %d: %v", i, err)
		}
	}
	e, err := st.Open(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	if got := readEntry(t, e, v.Size); !bytes.Equal(got, data) {
		t.Error("the entry is not the object")
	}
	e.Close()

	short := testVersion(append(bytes.Clone(data), 1))
	if err := st.Publish(ctx, short, bytes.NewReader(data), mib, make([]uint32, 3), nil); err == nil {
		t.Error("a publish whose source ended early succeeded")
	}
	refused := testVersion(data[:mib])
	errNo := errors.New("not proven")
	if err := st.Publish(ctx, refused, bytes.NewReader(data[:mib]), mib, blockSums(data[:mib], mib), func() error { return errNo }); !errors.Is(err, errNo) {
		t.Errorf("a publish whose verify failed: %v", err)
	}
	for _, v := range []Version{short, refused} {
		if _, err := st.Open(ctx, v); !errors.Is(err, iofs.ErrNotExist) {
			t.Errorf("after a failed publish: %v, want no entry", err)
		}
	}
}

// An entry that is damaged or rewritten to name another object is refused
// at Open (ErrDisproved); bytes flipped with the trailer left alone pass
// Open but not the Prover. Open removes what it refuses, Entry.Remove what
// the Prover refused. A FIFO or a symbolic link planted as an entry is
// refused at once, not waited on or followed.
func TestFolderRefusesDamagedEntries(t *testing.T) {
	data := cachetest.RandBytes(5, mib+3)
	v := testVersion(data)
	for _, c := range []struct {
		name   string
		damage func(path string) error
		atOpen bool
	}{
		{"cut short", func(p string) error { return os.Truncate(p, v.Size+5) }, true},
		{"trailer byte flipped", func(p string) error { return flipAt(p, -20) }, true},
		{"a byte grown", func(p string) error { return appendTo(p, []byte{0}) }, true},
		{"data byte flipped", func(p string) error { return flipAt(p, 100) }, false},
		{"a FIFO", func(p string) error { os.Remove(p); return unix.Mkfifo(p, 0o644) }, true},
		{"a symbolic link", func(p string) error {
			os.Remove(p)
			other := filepath.Join(filepath.Dir(p), "elsewhere")
			if err := os.WriteFile(other, data, 0o644); err != nil {
				return err
			}
			return os.Symlink(other, p)
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := OpenFolder(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Publish(context.Background(), v, bytes.NewReader(data), mib, blockSums(data, mib), nil); err != nil {
				t.Fatal(err)
			}
			if err := c.damage(f.entryPath(Name(v))); err != nil {
				t.Fatal(err)
			}
			e, err := f.Open(context.Background(), v)
			if c.atOpen {
				if !errors.Is(err, ErrDisproved) {
					t.Fatalf("Open: %v, want ErrDisproved", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				p := NewProver(v.ETag, v.Size)
				io.Copy(p, io.NewSectionReader(e, 0, v.Size))
				if err := p.Check(); !errors.Is(err, ErrDisproved) {
					t.Fatalf("Prover: %v, want ErrDisproved", err)
				}
				if err := e.Remove(); err != nil {
					t.Fatal(err)
				}
				e.Close()
			}
			if _, err := f.Open(context.Background(), v); !errors.Is(err, iofs.ErrNotExist) {
				t.Errorf("after the refusal: %v, want no entry", err)
			}
		})
	}
}

// Removing a refused entry leaves alone a good one that another node put
// under its name meanwhile.
func TestEntryRemoveLeavesAReplacement(t *testing.T) {
	data := cachetest.RandBytes(6, mib)
	v := testVersion(data)
	f, err := OpenFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	publish := func() {
		t.Helper()
		if err := f.Publish(context.Background(), v, bytes.NewReader(data), mib, blockSums(data, mib), nil); err != nil {
			t.Fatal(err)
		}
	}
	publish()
	e, err := f.Open(context.Background(), v)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := os.Remove(f.entryPath(Name(v))); err != nil {
		t.Fatal(err)
	}
	publish() // another node's copy
	if err := e.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.entryPath(Name(v))); err != nil {
		t.Errorf("the replacement was removed: %v", err)
	}
}

// flipAt flips one bit of the byte at off (from the end if negative).
func flipAt(path string, off int64) error {
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer file.Close()
	if off < 0 {
		fi, err := file.Stat()
		if err != nil {
			return err
		}
		off += fi.Size()
	}
	b := make([]byte, 1)
	if _, err := file.ReadAt(b, off); err != nil {
		return err
	}
	b[0] ^= 1
	_, err = file.WriteAt(b, off)
	return err
}

func appendTo(path string, b []byte) error {
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer file.Close()
	_, err = file.Write(b)
	return err
}
