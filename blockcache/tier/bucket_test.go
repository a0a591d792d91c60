package tier

import (
	"bytes"
	"context"
	"errors"
	"io"
	iofs "io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"s3cachefs/blockcache/internal/cachetest"
	"s3cachefs/blockcache/s3store"
	"s3cachefs/index"
	"s3cachefs/test/s3server"
)

var _ Objects = (*s3store.Store)(nil)

// newTestBucket starts versitygw with a bucket "tier" and returns a
// Bucket tier under PREFIX "near/cache" in it, with a claim TTL of ttl,
// and the store it uses (for its request counts).
func newTestBucket(t *testing.T, ttl time.Duration) (*Bucket, *s3store.Store) {
	t.Helper()
	srv := s3server.Start(t)
	srv.CreateBucket(t, "tier")
	none := filepath.Join(t.TempDir(), "none")
	for _, kv := range append(srv.Env(), "AWS_PROFILE=", "AWS_CONFIG_FILE="+none, "AWS_SHARED_CREDENTIALS_FILE="+none,
		"AWS_SESSION_TOKEN=", "AWS_ENDPOINT_URL=", "AWS_ENDPOINT_URL_S3=") {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	s, err := s3store.New(context.Background(), s3store.Options{Bucket: "tier", Endpoint: srv.Endpoint, ForcePathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return NewBucket(s, BucketOptions{Prefix: "/near/cache/", ClaimTTL: ttl, TempDir: t.TempDir()}), s
}

func publishTo(t *testing.T, st Store, v Version, data []byte) {
	t.Helper()
	if err := st.Publish(context.Background(), v, bytes.NewReader(data), mib, blockSums(data, mib), nil); err != nil {
		t.Fatal(err)
	}
}

// A published entry lies at PREFIX/s3cachefs-tier-v1/objects/NN/NAME and
// opens as the object's bytes and checksums, only under its own version.
// A copy reads it in a few large ranged GETs, not one per 32 KiB read;
// reads at any offset, backwards too, give the right bytes.
func TestBucketPublishOpen(t *testing.T) {
	b, s := newTestBucket(t, 0)
	ctx := context.Background()
	data := cachetest.RandBytes(3, 3*bucketChunk+7)
	v := testVersion(data)
	publishTo(t, b, v, data)
	name := Name(v)
	if info, err := s.Head(ctx, "near/cache/s3cachefs-tier-v1/objects/"+name[:2]+"/"+name); err != nil || info.Size <= v.Size {
		t.Fatalf("the entry is not where the layout says: %+v, %v", info, err)
	}

	before := s.Stats().Gets
	e, err := b.Open(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var got bytes.Buffer
	if _, err := io.CopyBuffer(&got, io.NewSectionReader(e, 0, v.Size+10), make([]byte, 32<<10)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("read %d bytes back, not the %d published", got.Len(), len(data))
	}
	if gets := s.Stats().Gets - before; gets > 2+4 {
		t.Errorf("%d GETs to open and copy an entry of 4 ranges, want at most 6", gets)
	}
	if be := e.(*bucketEntry); be.BlockSize() != mib || !slices.Equal(be.Sums(), blockSums(data, mib)) {
		t.Errorf("block size %d and %d sums", be.BlockSize(), len(be.Sums()))
	}
	for _, off := range []int64{v.Size - 3, 5, 2*bucketChunk - 2, 0} {
		p := make([]byte, 10)
		n, err := e.ReadAt(p, off)
		want := data[off:min(off+10, v.Size)]
		if n != len(want) || !bytes.Equal(p[:n], want) || (n < 10) != (err == io.EOF) {
			t.Errorf("ReadAt(%d): %d bytes, %v", off, n, err)
		}
	}
	for _, other := range []Version{{v.Bucket, v.Key, "other", v.Size}, {"c", v.Key, v.ETag, v.Size}} {
		if _, err := b.Open(ctx, other); !errors.Is(err, iofs.ErrNotExist) {
			t.Errorf("Open(%+v): %v, want ErrNotExist", other, err)
		}
	}
	// The same version with another size is not this entry: refused and
	// deleted.
	if _, err := b.Open(ctx, Version{v.Bucket, v.Key, v.ETag, v.Size + 1}); !errors.Is(err, ErrDisproved) {
		t.Errorf("Open with another size: %v, want ErrDisproved", err)
	}
	if _, err := b.Open(ctx, v); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("after the refusal: %v, want no entry", err)
	}
}

// Readers copying parts of an entry at once (as a fill of a multipart
// object does), a block at a time, get the right bytes, and share the
// chunks fetched ahead: each range is fetched about once.
func TestBucketEntryParallelParts(t *testing.T) {
	b, s := newTestBucket(t, 0)
	const parts = 6
	data := cachetest.RandBytes(8, parts*bucketChunk-5)
	v := testVersion(data)
	publishTo(t, b, v, data)
	before := s.Stats().Gets
	e, err := b.Open(context.Background(), v)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	got := make([]byte, len(data))
	var wg sync.WaitGroup
	errs := make([]error, parts)
	for i := range parts {
		wg.Go(func() {
			for off := int64(i) * bucketChunk; off < min(int64(i+1)*bucketChunk, v.Size); off += mib {
				if _, err := e.ReadAt(got[off:min(off+mib, v.Size)], off); err != nil && err != io.EOF {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the parts read are not the object")
	}
	if gets := s.Stats().Gets - before; gets > parts+2 {
		t.Errorf("%d GETs to open and read %d ranges, want at most %d", gets, parts, parts+2)
	}
}

// An entry whose trailer is damaged is refused at Open and deleted; one
// whose bytes were changed (its trailer rewritten to match) passes Open
// but not the Prover, and Remove deletes it; Remove leaves alone another
// version put under the name meanwhile.
func TestBucketRefusesDamagedEntries(t *testing.T) {
	b, s := newTestBucket(t, 0)
	ctx := context.Background()
	data := cachetest.RandBytes(5, mib+3)
	v := testVersion(data)
	key := b.EntryKey(v)
	put := func(entry []byte) {
		t.Helper()
		if err := s.Put(ctx, key, bytes.NewReader(entry), int64(len(entry))); err != nil {
			t.Fatal(err)
		}
	}
	good := append(bytes.Clone(data), encodeTrailer(v, mib, blockSums(data, mib))...)

	damaged := bytes.Clone(good)
	damaged[len(damaged)-20] ^= 1
	put(damaged)
	if _, err := b.Open(ctx, v); !errors.Is(err, ErrDisproved) {
		t.Fatalf("Open of a damaged trailer: %v, want ErrDisproved", err)
	}
	if _, err := s.Head(ctx, key); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("the damaged entry was not deleted: %v", err)
	}

	poisoned := bytes.Clone(data)
	poisoned[100] ^= 1
	put(append(poisoned, encodeTrailer(v, mib, blockSums(poisoned, mib))...))
	e, err := b.Open(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	p := NewProver(v.ETag, v.Size)
	io.Copy(p, io.NewSectionReader(e, 0, v.Size))
	if err := p.Check(); !errors.Is(err, ErrDisproved) {
		t.Fatalf("Prover: %v, want ErrDisproved", err)
	}
	put(good) // another node's copy, put meanwhile
	if err := e.Remove(); err != nil {
		t.Fatal(err)
	}
	e.Close()
	if _, err := b.Open(ctx, v); err != nil {
		t.Errorf("the good replacement was removed: %v", err)
	}
	e, err = b.Open(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Head(ctx, key); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("Remove of the version opened left it: %v", err)
	}
}

// Of two nodes claiming a version, one wins; the other's AwaitClaim waits
// while the winner renews past the TTL, and returns once it releases. A
// claim whose maker died (never renewed) is broken after about the TTL. A
// claim on a version whose entry is there says so (io/fs.ErrExist).
func TestBucketClaims(t *testing.T) {
	const ttl = time.Second
	b, s := newTestBucket(t, ttl)
	ctx := context.Background()
	data := cachetest.RandBytes(6, mib)
	v := testVersion(data)

	release, ok, err := b.Claim(ctx, v)
	if err != nil || !ok {
		t.Fatalf("Claim: %v, %v", ok, err)
	}
	if _, ok, err := b.Claim(ctx, v); ok || err != nil {
		t.Fatalf("a second Claim: %v, %v; want not ok, no error", ok, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*ttl)
	err = b.AwaitClaim(wctx, v)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AwaitClaim on a claim renewed for 3 TTLs: %v, want it still waiting", err)
	}
	release()
	release() // twice is fine
	start := time.Now()
	if err := b.AwaitClaim(ctx, v); err != nil || time.Since(start) > ttl {
		t.Errorf("AwaitClaim after release: %v after %v", err, time.Since(start))
	}

	// A dead node's claim: made, never renewed.
	dead := []byte("elsewhere 1 feed 0\n")
	if err := s.Create(ctx, b.claimKey(Name(v)), bytes.NewReader(dead), int64(len(dead))); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := b.AwaitClaim(ctx, v); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < ttl || d > 3*ttl {
		t.Errorf("a dead claim was broken after %v, want about the TTL of %v", d, ttl)
	}
	release, ok, err = b.Claim(ctx, v)
	if err != nil || !ok {
		t.Fatalf("Claim after the dead one was broken: %v, %v", ok, err)
	}
	// Broken and taken by another node meanwhile: release leaves theirs.
	if err := s.Delete(ctx, b.claimKey(Name(v)), ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, b.claimKey(Name(v)), bytes.NewReader(dead), int64(len(dead))); err != nil {
		t.Fatal(err)
	}
	release()
	if _, err := s.Head(ctx, b.claimKey(Name(v))); err != nil {
		t.Errorf("release deleted another node's claim: %v", err)
	}
	if err := s.Delete(ctx, b.claimKey(Name(v)), ""); err != nil {
		t.Fatal(err)
	}

	publishTo(t, b, v, data)
	if _, ok, err := b.Claim(ctx, v); ok || !errors.Is(err, iofs.ErrExist) {
		t.Errorf("Claim of a published version: %v, %v; want ErrExist", ok, err)
	}
	if _, err := s.Head(ctx, b.claimKey(Name(v))); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("the claim on a published version was left: %v", err)
	}
	if err := b.AwaitClaim(ctx, v); err != nil {
		t.Errorf("AwaitClaim of a published version: %v", err)
	}
}

// A bucket tier that cannot be reached is, to the cache, a tier without
// the entry (io/fs.ErrNotExist), not an entry refused.
func TestSharedBucketUnreachable(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFAKE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	s, err := s3store.New(context.Background(), s3store.Options{Bucket: "tier", Endpoint: "http://127.0.0.1:1", ForcePathStyle: true, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	data := cachetest.RandBytes(7, 1000)
	v := testVersion(data)
	sh := NewShared(NewBucket(s, BucketOptions{}), v.Bucket)
	obj := index.Object{Key: v.Key, ETag: v.ETag, Size: v.Size}
	w := &memAt{b: make([]byte, len(data)), writes: map[int64]int{}}
	err = sh.Fill(context.Background(), obj, w, mib)
	if !errors.Is(err, iofs.ErrNotExist) || !errors.Is(err, s3store.ErrUnreachable) || errors.Is(err, ErrDisproved) || len(w.writes) != 0 {
		t.Errorf("Fill from an unreachable bucket: %v (%d blocks written), want ErrNotExist and ErrUnreachable", err, len(w.writes))
	}
	if _, _, err := sh.Claim(context.Background(), obj); !errors.Is(err, s3store.ErrUnreachable) {
		t.Errorf("Claim in an unreachable bucket: %v, want ErrUnreachable", err)
	}
}

// A publish whose bytes do not give the ETag marks the object, in a folder
// and in a bucket alike: later publishes of it are refused at once, and a
// claim on it is granted with nobody to wait for.
func TestUnprovableMark(t *testing.T) {
	folder, err := OpenFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bucket, _ := newTestBucket(t, time.Second)
	data := cachetest.RandBytes(9, mib+5)
	v := testVersion(data)
	v.ETag = "0123456789abcdef0123456789abcdef" // not the MD5 of data
	for name, st := range map[string]Store{"folder": folder, "bucket": bucket} {
		t.Run(name, func(t *testing.T) {
			p := NewProver(v.ETag, v.Size)
			err := st.Publish(context.Background(), v, io.TeeReader(bytes.NewReader(data), p), mib, blockSums(data, mib), p.Check)
			if !errors.Is(err, ErrDisproved) {
				t.Fatalf("publish of bytes that do not give the ETag: %v, want ErrDisproved", err)
			}
			if err := st.Publish(context.Background(), v, bytes.NewReader(data), mib, blockSums(data, mib), nil); !errors.Is(err, ErrDisproved) {
				t.Errorf("a second publish: %v, want it refused as marked", err)
			}
			release, ok, err := st.Claim(context.Background(), v)
			if err != nil || !ok {
				t.Fatalf("claim of a marked object: %v, %v; want granted", ok, err)
			}
			release()
			if _, err := st.Open(context.Background(), v); !errors.Is(err, iofs.ErrNotExist) {
				t.Errorf("open: %v, want no entry", err)
			}
		})
	}
}
