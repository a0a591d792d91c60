package tier

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"s3cachefs/blockcache/internal/cachetest"
	"s3cachefs/index"
)

// memObjects is an in-memory Objects (If-None-Match and If-Match honoured).
type memObjects struct {
	mu       sync.Mutex
	objs     map[string][]byte
	getBytes atomic.Int64
	gets     atomic.Int64
	// block, when set, makes GetRange of keys it returns true for wait for
	// the request's context, then fail; entered, when set, is closed by
	// the first such GetRange.
	block   func(key string, off int64) bool
	entered chan struct{}
	once    sync.Once
}

func newMemObjects() *memObjects { return &memObjects{objs: map[string][]byte{}} }

func etagOf(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

func (m *memObjects) GetRange(ctx context.Context, key, etag string, off, n int64) (io.ReadCloser, error) {
	m.mu.Lock()
	b, ok := m.objs[key]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("get %s: %w", key, iofs.ErrNotExist)
	}
	if etag != "" && etagOf(b) != etag {
		return nil, fmt.Errorf("get %s: %w", key, index.ErrStale)
	}
	if m.block != nil && m.block(key, off) {
		if m.entered != nil {
			m.once.Do(func() { close(m.entered) })
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if off+n > int64(len(b)) {
		return nil, index.ErrStale
	}
	m.gets.Add(1)
	m.getBytes.Add(n)
	return io.NopCloser(bytes.NewReader(b[off : off+n])), nil
}

func (m *memObjects) Head(ctx context.Context, key string) (index.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[key]
	if !ok {
		return index.Object{}, fmt.Errorf("head %s: %w", key, iofs.ErrNotExist)
	}
	return index.Object{Key: key, Size: int64(len(b)), ETag: etagOf(b), LastModified: time.Now()}, nil
}

func (m *memObjects) Create(ctx context.Context, key string, body io.ReadSeeker, size int64) error {
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objs[key]; ok {
		return iofs.ErrExist
	}
	m.objs[key] = b
	return nil
}

func (m *memObjects) Put(ctx context.Context, key string, body io.ReadSeeker, size int64) error {
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs[key] = b
	return nil
}

func (m *memObjects) Delete(ctx context.Context, key, etag string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.objs[key]; ok && etag != "" && etagOf(b) != etag {
		return index.ErrStale
	}
	delete(m.objs, key)
	return nil
}

// A reader waiting on a chunk whose fetch is still running when the
// entry's context ends returns at once, without reading what the fetch
// still writes (the race detector watches).
func TestBucketEntryReadCancelled(t *testing.T) {
	m := newMemObjects()
	b := NewBucket(m, BucketOptions{TempDir: t.TempDir()})
	data := cachetest.RandBytes(1, 2*mib)
	v := testVersion(data)
	if err := b.Publish(context.Background(), v, bytes.NewReader(data), mib, blockSums(data, mib), nil); err != nil {
		t.Fatal(err)
	}
	m.block = func(key string, off int64) bool { return off < v.Size }
	m.entered = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	e, err := b.Open(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		_, err := e.ReadAt(make([]byte, 10), 0)
		done <- err
	}()
	<-m.entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("read of a cancelled entry: %v, want context.Canceled", err)
	}
	e.Close()
}

// A fill of a multipart object uploaded in 5 MiB parts (not a multiple of
// the bucket entry's 8 MiB chunks) with 8 part workers fetches each chunk
// once: a chunk two workers share is kept until both copied their share.
func TestBucketFillPartsFetchOnce(t *testing.T) {
	old := fillWorkers
	fillWorkers = 8
	defer func() { fillWorkers = old }()
	m := newMemObjects()
	b := NewBucket(m, BucketOptions{TempDir: t.TempDir()})
	const ps = 5 * mib
	data := cachetest.RandBytes(2, 11*ps+3*mib)
	v := Version{Bucket: "b", Key: "k", ETag: s3ETag(data, ps), Size: int64(len(data))}
	if sz, n, ok := NewProver(v.ETag, v.Size).OnePartSize(); !ok || sz != ps {
		t.Fatalf("part size %d of %d, %v", sz, n, ok)
	}
	if err := b.Publish(context.Background(), v, bytes.NewReader(data), mib, blockSums(data, mib), nil); err != nil {
		t.Fatal(err)
	}
	sh := NewShared(b, "b")
	worst := 0.0
	for range 2 {
		before, beforeN := m.getBytes.Load(), m.gets.Load()
		w := &memAt{b: make([]byte, len(data)), writes: map[int64]int{}}
		if err := sh.Fill(context.Background(), index.Object{Key: "k", ETag: v.ETag, Size: v.Size}, w, mib); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(w.b, data) {
			t.Fatal("wrong bytes")
		}
		got := float64(m.getBytes.Load()-before) / float64(v.Size)
		t.Logf("%.2fx the object's bytes fetched, %d GETs", got, m.gets.Load()-beforeN)
		worst = max(worst, got)
	}
	if worst > 1.05 {
		t.Errorf("a fill fetched up to %.2fx the object's bytes from the tier", worst)
	}
}

// skewed is memObjects whose server clock runs behind the node's.
type skewed struct {
	*memObjects
	skew time.Duration
}

func (s skewed) Head(ctx context.Context, key string) (index.Object, error) {
	o, err := s.memObjects.Head(ctx, key)
	o.LastModified = o.LastModified.Add(-s.skew)
	return o, err
}

// A tier bucket whose clock is behind the nodes' by more than ten TTLs
// (SigV4 tolerates 15 minutes) does not make a live claim look long dead:
// a waiter keeps waiting while its holder renews it.
func TestBucketClaimServerClockSkew(t *testing.T) {
	const ttl = time.Second
	objs := skewed{newMemObjects(), 11 * ttl}
	a := NewBucket(objs, BucketOptions{ClaimTTL: ttl})
	b := NewBucket(objs, BucketOptions{ClaimTTL: ttl})
	v := Version{Bucket: "b", Key: "k", ETag: "0123456789abcdef0123456789abcdef", Size: 10}
	releaseA, ok, err := a.Claim(context.Background(), v)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	defer releaseA()
	ctx, cancel := context.WithTimeout(context.Background(), 3*ttl)
	defer cancel()
	if err := b.AwaitClaim(ctx, v); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting on a live claim for 3 TTLs: %v, want still waiting", err)
	}
	if release, okB, err := b.Claim(context.Background(), v); err != nil || okB {
		if okB {
			release()
		}
		t.Errorf("node B claimed an object node A holds: %v, %v", okB, err)
	}
}
