package s3server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"s3cachefs/blockcache/s3store/storetest"
	"s3cachefs/test/s3server"
)

// The conformance suite passes on synthetic buckets: every case wants an
// empty bucket to start from, so each gets one with no sets, and the
// objects it puts and deletes go through the same merged listing and
// serving paths as generated keys do.
func TestSynthConformance(t *testing.T) {
	f := s3server.StartFake(t)
	var n atomic.Int64
	storetest.Run(t, storetest.Harness{New: func(t *testing.T) storetest.Fixture {
		bucket := fmt.Sprintf("synth-%d", n.Add(1))
		if err := f.CreateSynthBucket(bucket); err != nil {
			t.Fatal(err)
		}
		return fakeFixture(t, f, bucket)
	}})
}

// smallShape is an ImageFolder-like set, a flat folder and a tiny one
// beside them.
var smallShape = []s3server.Set{
	{Prefix: "img/train/", Folder: "n%05d", Folders: 7, File: "%07d.JPEG", Files: 13, Size: 1000},
	{Prefix: "flat/", File: "f%06d", Files: 2500, Size: 7},
	{Prefix: "a/", File: "%d", Files: 3, Size: 0},
}

// allKeys writes out every key of sets the slow way, for reference.
func allKeys(sets []s3server.Set) []string {
	var out []string
	for _, s := range sets {
		if s.Folder == "" {
			for f := range s.Files {
				out = append(out, s.Prefix+fmt.Sprintf(s.File, f))
			}
			continue
		}
		for d := range s.Folders {
			for f := range s.Files {
				out = append(out, s.Prefix+fmt.Sprintf(s.Folder, d)+"/"+fmt.Sprintf(s.File, f))
			}
		}
	}
	slices.Sort(out)
	return out
}

// oneLevel is the reference listing of prefix with delimiter "/": keys
// and common prefixes, each in order.
func oneLevel(keys []string, prefix string) (objs, prefixes []string) {
	for _, k := range keys {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		if i := strings.Index(rest, "/"); i >= 0 {
			if p := prefix + rest[:i+1]; len(prefixes) == 0 || prefixes[len(prefixes)-1] != p {
				prefixes = append(prefixes, p)
			}
			continue
		}
		objs = append(objs, k)
	}
	return objs, prefixes
}

// Listings of generated keys, with a stored key and a deletion mixed in,
// match the reference through the real S3 adapter (v2, URL-encoded) and
// through ListObjects v1 pages of 7 with a delimiter.
func TestSynthListing(t *testing.T) {
	f := s3server.StartFake(t)
	if err := f.CreateSynthBucket("syn", smallShape...); err != nil {
		t.Fatal(err)
	}
	f.Put("syn", "img/train/n00003/extra", []byte("stored"))
	f.Put("syn", "flat/f000010", []byte("replaced")) // hides a generated key
	f.Delete("syn", "img/train/n00005/0000004.JPEG")
	keys := allKeys(smallShape)
	keys = append(keys, "img/train/n00003/extra")
	keys = slices.DeleteFunc(keys, func(k string) bool { return k == "img/train/n00005/0000004.JPEG" })
	slices.Sort(keys)

	s := fakeStore(t, f, "syn")
	client := f.Server().Client(t)
	for _, prefix := range []string{"", "img/", "img/train/", "img/train/n00003/", "img/train/n00005/", "flat/", "a/", "none/"} {
		wantObjs, wantPrefixes := oneLevel(keys, prefix)
		res, err := s.List(context.Background(), prefix)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, o := range res.Objects {
			got = append(got, o.Key)
		}
		if !slices.Equal(got, wantObjs) || !slices.Equal(res.Prefixes, wantPrefixes) {
			t.Errorf("v2 List(%q) = %d objects %q…, prefixes %q; want %d objects, prefixes %q",
				prefix, len(got), head(got), res.Prefixes, len(wantObjs), wantPrefixes)
		}
		gotObjs, gotPrefixes := listV1(t, client, prefix, 7)
		if !slices.Equal(gotObjs, wantObjs) || !slices.Equal(gotPrefixes, wantPrefixes) {
			t.Errorf("v1 ListObjects(%q) = %d objects %q…, prefixes %q; want %d objects, prefixes %q",
				prefix, len(gotObjs), head(gotObjs), gotPrefixes, len(wantObjs), wantPrefixes)
		}
	}
	res, err := s.List(context.Background(), "flat/")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range res.Objects[:12] {
		size, etag := int64(7), s3server.SynthETag(o.Key, 7)
		if o.Key == "flat/f000010" {
			size, etag = 8, "" // stored: an MD5, not checked here
		}
		if o.Size != size || (etag != "" && o.ETag != etag) {
			t.Errorf("%s: size %d, ETag %q; want %d, %q", o.Key, o.Size, o.ETag, size, etag)
		}
	}
}

func head(s []string) []string { return s[:min(len(s), 3)] }

// listV1 lists prefix with ListObjects v1 pages of max keys, delimiter
// "/", following NextMarker.
func listV1(t *testing.T, c *s3.Client, prefix string, max int32) (objs, prefixes []string) {
	t.Helper()
	in := &s3.ListObjectsInput{Bucket: aws.String("syn"), Prefix: aws.String(prefix), Delimiter: aws.String("/"), MaxKeys: aws.Int32(max)}
	for {
		out, err := c.ListObjects(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Contents {
			objs = append(objs, aws.ToString(o.Key))
		}
		for _, p := range out.CommonPrefixes {
			prefixes = append(prefixes, aws.ToString(p.Prefix))
		}
		if n := len(out.Contents) + len(out.CommonPrefixes); n > int(max) {
			t.Fatalf("page of %d items, max %d", n, max)
		}
		if !aws.ToBool(out.IsTruncated) {
			return objs, prefixes
		}
		in.Marker = out.NextMarker
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// Listing a folder of 10^6 keys goes page by page in 1,000 pages, in
// order, without the server holding the keys: the live heap after it
// grows by far less than the keys would take (~50 MB as strings). Pages
// are served in-process and scanned by hand: the SDK's XML decoding of
// 10^6 entries takes minutes under -race, and TestSynthListing covers it.
func TestSynthMillionKeyFolder(t *testing.T) {
	if testing.Short() {
		t.Skip("lists 10^6 keys: ~90 s under -race")
	}
	const n = 1_000_000
	f := s3server.StartFake(t)
	set := s3server.Set{Prefix: "big/", File: "%07d.bin", Files: n, Size: 110 << 10}
	if err := f.CreateSynthBucket("syn", set); err != nil {
		t.Fatal(err)
	}
	h := f.Handler()
	before := heapInUse()
	var i, pages int
	token := ""
	for {
		u := "/syn?list-type=2&prefix=big/&delimiter=/&encoding-type=url"
		if token != "" {
			u += "&continuation-token=" + url.QueryEscape(token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, u, nil))
		body := w.Body.String()
		pages++
		for {
			_, rest, ok := strings.Cut(body, "<Key>")
			if !ok {
				break
			}
			key, rest, _ := strings.Cut(rest, "</Key>")
			if want := fmt.Sprintf("big/%07d.bin", i); key != want {
				t.Fatalf("key %d = %q, want %q", i, key, want)
			}
			body = rest
			i++
		}
		next, ok := between(w.Body.String(), "<NextContinuationToken>", "</NextContinuationToken>")
		if !ok {
			break
		}
		token = next
	}
	if i != n || pages != n/1000 {
		t.Errorf("listed %d keys in %d pages, want %d in %d", i, pages, n, n/1000)
	}
	if grown := int64(heapInUse()) - int64(before); grown > 8<<20 {
		t.Errorf("live heap grew by %d MiB over the listing, want < 8", grown>>20)
	}
}

// between is the text of s between open and close.
func between(s, open, close string) (string, bool) {
	_, rest, ok := strings.Cut(s, open)
	if !ok {
		return "", false
	}
	v, _, ok := strings.Cut(rest, close)
	return v, ok
}

// A page costs the same whatever the bucket holds: serving one page deep
// in a 10^7-key ImageFolder-like bucket allocates about as much as a page
// of a 10^4-key one.
func TestSynthPageCostFlat(t *testing.T) {
	f := s3server.StartFake(t)
	small := s3server.Set{Prefix: "t/", Folder: "n%05d", Folders: 10, File: "%08d", Files: 1000, Size: 1}
	big := small
	big.Folders = 10_000
	if err := f.CreateSynthBucket("small", small); err != nil {
		t.Fatal(err)
	}
	if err := f.CreateSynthBucket("big", big); err != nil {
		t.Fatal(err)
	}
	h := f.Handler()
	pageAllocs := func(bucket string, folder int) float64 {
		url := fmt.Sprintf("/%s?list-type=2&prefix=t/n%05d/&delimiter=/&start-after=t/n%05d/00000500", bucket, folder, folder)
		return testing.AllocsPerRun(5, func() {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, url, nil))
			if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "<KeyCount>499</KeyCount>") {
				t.Fatalf("%s: %d %.300s", url, w.Code, w.Body.String())
			}
		})
	}
	a, b := pageAllocs("small", 5), pageAllocs("big", 9_876)
	if b > 1.5*a {
		t.Errorf("a page of the 10^7-key bucket took %.0f allocations, of the 10^4-key one %.0f: want ≤ 1.5×", b, a)
	}
	// Common prefixes: one page of 1,000 folders of the big bucket.
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/big?list-type=2&prefix=t/&delimiter=/&start-after=t/n05000/", nil))
	body := w.Body.String()
	if !strings.Contains(body, "<Prefix>t/n05001/</Prefix>") || !strings.Contains(body, "<Prefix>t/n06000/</Prefix>") ||
		strings.Contains(body, "<Prefix>t/n06001/</Prefix>") || strings.Contains(body, "<Contents>") {
		t.Errorf("folder page after t/n05000/: %.500s", body)
	}
}

// Any range of a generated object is the generator's bytes, the same
// bytes as in the whole object; HEAD and If-Match use SynthETag.
func TestSynthRangeBytes(t *testing.T) {
	f := s3server.StartFake(t)
	if err := f.CreateSynthBucket("syn", smallShape...); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	client := f.Server().Client(t)
	const key = "img/train/n00002/0000011.JPEG"
	etag := `"` + s3server.SynthETag(key, 1000) + `"`
	whole := make([]byte, 1000)
	s3server.SynthBytes(key, 0, whole)
	other := make([]byte, 1000)
	s3server.SynthBytes("img/train/n00002/0000010.JPEG", 0, other)
	if bytes.Equal(whole, other) || bytes.Count(whole, []byte{0}) > 20 {
		t.Fatalf("generated bytes look constant or shared between keys")
	}
	head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("syn"), Key: aws.String(key)})
	if err != nil || aws.ToInt64(head.ContentLength) != 1000 || aws.ToString(head.ETag) != etag {
		t.Fatalf("HeadObject = %v, %v; want 1000 bytes, ETag %s", head, err, etag)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		first := rng.Int64N(1000)
		last := first + rng.Int64N(1000-first)
		out, err := client.GetObject(ctx, &s3.GetObjectInput{
			Bucket: aws.String("syn"), Key: aws.String(key), IfMatch: aws.String(etag),
			Range: aws.String(fmt.Sprintf("bytes=%d-%d", first, last)),
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(out.Body)
		out.Body.Close()
		want := make([]byte, last-first+1)
		s3server.SynthBytes(key, first, want)
		if err != nil || !bytes.Equal(got, want) || !bytes.Equal(got, whole[first:last+1]) {
			t.Fatalf("range %d-%d: %d bytes, %v; not the generator's", first, last, len(got), err)
		}
	}
	_, err = client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("syn"), Key: aws.String(key), IfMatch: aws.String(`"other"`)})
	if code := apiCode(err); code != "PreconditionFailed" {
		t.Errorf("If-Match of another ETag: %v, want PreconditionFailed", err)
	}
	_, err = client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("syn"), Key: aws.String("img/train/n00007/0000000.JPEG")})
	if code := apiCode(err); code != "NoSuchKey" {
		t.Errorf("key past the last folder: %v, want NoSuchKey", err)
	}
	loc, err := client.GetBucketLocation(ctx, &s3.GetBucketLocationInput{Bucket: aws.String("syn")})
	if err != nil || loc.LocationConstraint != "" {
		t.Errorf("GetBucketLocation = %v, %v; want us-east-1 (empty)", loc, err)
	}
}

// Bad shapes are refused: names that do not sort as their indices, and
// sets whose keys interleave.
func TestSynthBadShapes(t *testing.T) {
	f := s3server.StartFake(t)
	for _, sets := range [][]s3server.Set{
		{{Prefix: "x/", File: "%d", Files: 11}},
		{{Prefix: "x/", File: "a/%03d", Files: 3}},
		{{Prefix: "x", File: "%03d", Files: 3}},
		{{Prefix: "x/", File: "%03d", Files: 3}, {Prefix: "x/", File: "%03d.b", Files: 3}},
	} {
		if err := f.CreateSynthBucket("bad", sets...); err == nil {
			t.Errorf("CreateSynthBucket(%+v) accepted", sets)
		}
	}
}
