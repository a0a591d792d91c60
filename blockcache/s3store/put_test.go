package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"s3cachefs/blockcache/s3store"
	"s3cachefs/index"
	"s3cachefs/test/s3server"
)

// Create stores an object only where none is: a second create of the key,
// however many race, reports io/fs.ErrExist and leaves the first's bytes;
// Put replaces; Head describes what is there; Delete with an old ETag
// leaves a newer version, and a missing key is not an error.
func TestCreatePutHeadDelete(t *testing.T) {
	srv := s3server.Start(t)
	useServerEnv(t, srv)
	srv.CreateBucket(t, "tier")
	s := newStore(t, srv.Endpoint, "tier")
	ctx := context.Background()
	body := func(s string) (io.ReadSeeker, int64) { return strings.NewReader(s), int64(len(s)) }

	if _, err := s.Head(ctx, "k"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Head of a missing key: %v, want ErrNotExist", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Go(func() {
			b, n := body(strings.Repeat(string(rune('a'+i)), 10))
			errs[i] = s.Create(ctx, "k", b, n)
		})
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won < 0:
			won = i
		case err == nil:
			t.Errorf("creates %d and %d both succeeded", won, i)
		case !errors.Is(err, fs.ErrExist):
			t.Errorf("create %d: %v, want ErrExist", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no create succeeded")
	}
	want := strings.Repeat(string(rune('a'+won)), 10)
	first, err := s.Head(ctx, "k")
	if err != nil || first.Size != 10 || first.ETag == "" || first.LastModified.IsZero() {
		t.Fatalf("Head: %+v, %v", first, err)
	}
	if got := get(t, s, "k", first.ETag, 10); got != want {
		t.Errorf("read %q, want the winner's %q", got, want)
	}

	b, n := body("replaced!")
	if err := s.Put(ctx, "k", b, n); err != nil {
		t.Fatal(err)
	}
	second, err := s.Head(ctx, "k")
	if err != nil || second.Size != n || second.ETag == first.ETag {
		t.Fatalf("Head after Put: %+v, %v (before %+v)", second, err, first)
	}
	if _, err := s.GetRange(ctx, "k", first.ETag, 0, 1); !errors.Is(err, index.ErrStale) {
		t.Errorf("GetRange pinned to the replaced version: %v, want ErrStale", err)
	}
	if _, err := s.GetRange(ctx, "k", second.ETag, 5, 10); !errors.Is(err, index.ErrStale) {
		t.Errorf("GetRange past the end: %v, want ErrStale", err)
	}

	// versitygw honours If-Match on deletes, as S3 does.
	if err := s.Delete(ctx, "k", first.ETag); !errors.Is(err, index.ErrStale) {
		t.Errorf("Delete with an old ETag: %v, want ErrStale", err)
	}
	if _, err := s.Head(ctx, "k"); err != nil {
		t.Errorf("the new version was deleted with the old ETag: %v", err)
	}
	if err := s.Delete(ctx, "k", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Head(ctx, "k"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Head after Delete: %v, want ErrNotExist", err)
	}
	if err := s.Delete(ctx, "k", ""); err != nil {
		t.Errorf("Delete of a missing key: %v", err)
	}
	if err := s.Delete(ctx, "k", first.ETag); err != nil {
		t.Errorf("Delete of a missing key with an ETag: %v", err)
	}
	if st := s.Stats(); st.Puts != 7 || st.Deletes != 4 || st.Heads < 4 {
		t.Errorf("stats %+v", st)
	}
}

// A body past what S3 takes is refused before a request: Put past
// MaxPutSize, Create past MaxCreateSize.
func TestPutTooLarge(t *testing.T) {
	useEnv(t, "AKIDFAKE", "secret", "us-east-1")
	s := newStore(t, "http://127.0.0.1:1", "b")
	err := s.Put(context.Background(), "k", bytes.NewReader(nil), s3store.MaxPutSize+1)
	if err == nil || !strings.Contains(err.Error(), "at most") || s.Stats().Puts != 0 {
		t.Errorf("Put of 5 GiB + 1: %v, %d requests", err, s.Stats().Puts)
	}
	err = s.Create(context.Background(), "k", bytes.NewReader(nil), s3store.MaxCreateSize+1)
	if err == nil || !strings.Contains(err.Error(), "at most") || s.Stats().Puts != 0 {
		t.Errorf("Create of 5 TiB + 1: %v, %d requests", err, s.Stats().Puts)
	}
}

func get(t *testing.T, s *s3store.Store, key, etag string, n int64) string {
	t.Helper()
	r, err := s.GetRange(context.Background(), key, etag, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A Create past MultipartAbove is a multipart upload: the object is all of
// the body, in parts (its ETag says how many); a second Create of the key
// reports io/fs.ErrExist and leaves it, and no upload is left behind.
func TestCreateMultipart(t *testing.T) {
	srv := s3server.Start(t)
	useServerEnv(t, srv)
	srv.CreateBucket(t, "tier")
	s, err := s3store.New(context.Background(), s3store.Options{
		Bucket: "tier", Endpoint: srv.Endpoint, ForcePathStyle: true,
		MultipartAbove: 8 << 20, MultipartPartSize: 5 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789abcdef"), (12<<20)/16+7) // 12 MiB and a bit: 3 parts
	if err := s.Create(ctx, "big", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	info, err := s.Head(ctx, "big")
	if err != nil || info.Size != int64(len(data)) || !strings.HasSuffix(info.ETag, "-3") {
		t.Fatalf("Head after a multipart create: %+v, %v; want %d bytes in 3 parts", info, err, len(data))
	}
	if got := get(t, s, "big", info.ETag, int64(len(data))); got != string(data) {
		t.Error("the object is not the body")
	}
	other := bytes.Repeat([]byte("x"), len(data))
	if err := s.Create(ctx, "big", bytes.NewReader(other), int64(len(other))); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("a second multipart create: %v, want ErrExist", err)
	}
	if again, err := s.Head(ctx, "big"); err != nil || again.ETag != info.ETag {
		t.Errorf("after the second create: %+v, %v; want the first object", again, err)
	}
	ups, err := srv.Client(t).ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String("tier")})
	if err != nil || len(ups.Uploads) != 0 {
		t.Errorf("uploads left behind: %v, %v", ups.Uploads, err)
	}
}
