package s3server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"s3cachefs/blockcache/s3store"
	"s3cachefs/blockcache/s3store/storetest"
	"s3cachefs/test/s3server"
)

// fakeStore points the SDK's default chain at f's keys (and nothing else
// of the machine's) and returns an s3store on bucket.
func fakeStore(t *testing.T, f *s3server.Fake, bucket string) *s3store.Store {
	t.Helper()
	none := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": f.AccessKey, "AWS_SECRET_ACCESS_KEY": f.SecretKey, "AWS_SESSION_TOKEN": "",
		"AWS_REGION": f.Region, "AWS_PROFILE": "", "AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none,
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_S3": "",
	} {
		t.Setenv(k, v)
	}
	s, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, Endpoint: f.Endpoint, ForcePathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The fake passes the object-store conformance suite through the real S3
// adapter, as versitygw does: what the e2e tests learn on it holds for S3.
func TestFakeConformance(t *testing.T) {
	f := s3server.StartFake(t)
	var n atomic.Int64
	storetest.Run(t, storetest.Harness{New: func(t *testing.T) storetest.Fixture {
		bucket := fmt.Sprintf("conf-%d", n.Add(1))
		f.CreateBucket(bucket)
		return fakeFixture(t, f, bucket)
	}})
}

// fakeFixture is the conformance suite's view of bucket on f.
func fakeFixture(t *testing.T, f *s3server.Fake, bucket string) storetest.Fixture {
	return storetest.Fixture{
		Store:        fakeStore(t, f, bucket),
		Put:          func(_ testing.TB, key string, data []byte) { f.Put(bucket, key, data) },
		Delete:       func(_ testing.TB, key string) { f.Delete(bucket, key) },
		RemoveBucket: func(testing.TB) { f.RemoveBucket(bucket) },
		Truncate:     func(_ testing.TB, key string) { f.Truncate(bucket, key) },
	}
}

// oddKeys cannot all be files on a posix backend; the fake stores them.
var oddKeys = []string{
	"p/..", "p/.", "p/a//b", "p//lead", "p/marker/", "p/" + strings.Repeat("x", 300),
	"p/tab\tnl\n", "p/bad\xff\xfe", "p/both", "p/both/inner", "p/sp ace+plus%25", "p/ü",
}

// Odd keys come back from List exactly as stored, whatever bytes they hold
// (the adapter asks for encoding-type=url and decodes it), and each can be
// read by the key listed.
func TestFakeOddKeysRoundTrip(t *testing.T) {
	f := s3server.StartFake(t)
	f.CreateBucket("odd")
	for _, k := range oddKeys {
		f.Put("odd", k, []byte("data of "+k))
	}
	s := fakeStore(t, f, "odd")
	res, err := s.List(context.Background(), "p/")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range res.Objects {
		got = append(got, o.Key)
		rc, err := s.GetRange(context.Background(), o.Key, o.ETag, 0, o.Size)
		if err != nil {
			t.Fatalf("GetRange(%q): %v", o.Key, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(b) != "data of "+o.Key {
			t.Errorf("GetRange(%q) = %q, %v", o.Key, b, err)
		}
	}
	wantObjs := []string{"p/..", "p/.", "p/" + strings.Repeat("x", 300), "p/bad\xff\xfe", "p/both", "p/sp ace+plus%25", "p/tab\tnl\n", "p/ü"}
	slices.Sort(wantObjs)
	if !slices.Equal(got, wantObjs) {
		t.Errorf("objects = %q\nwant      %q", got, wantObjs)
	}
	if want := []string{"p//", "p/a/", "p/both/", "p/marker/"}; !slices.Equal(res.Prefixes, want) {
		t.Errorf("prefixes = %q, want %q", res.Prefixes, want)
	}
}

// Pages: max-keys counts common prefixes, each prefix appears once across
// pages, and the continuation token resumes after the last item.
func TestFakePagination(t *testing.T) {
	f := s3server.StartFake(t)
	f.CreateBucket("pages")
	var want []string
	for i := range 25 {
		k := fmt.Sprintf("d/%02d", i)
		if i%5 == 0 { // a folder with several keys in it
			for j := range 3 {
				f.Put("pages", fmt.Sprintf("%s/%d", k, j), nil)
			}
			want = append(want, k+"/")
			continue
		}
		f.Put("pages", k, []byte(k))
		want = append(want, k)
	}
	client := f.Server().Client(t)
	var got []string
	pages := 0
	p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{
		Bucket: aws.String("pages"), Prefix: aws.String("d/"), Delimiter: aws.String("/"), MaxKeys: aws.Int32(4),
	})
	for p.HasMorePages() {
		out, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if n := len(out.Contents) + len(out.CommonPrefixes); n > 4 || int32(n) != aws.ToInt32(out.KeyCount) {
			t.Errorf("page %d has %d items, KeyCount %d, max 4", pages, n, aws.ToInt32(out.KeyCount))
		}
		for _, o := range out.Contents {
			got = append(got, aws.ToString(o.Key))
		}
		for _, cp := range out.CommonPrefixes {
			got = append(got, aws.ToString(cp.Prefix))
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("listed %q\nwant   %q", got, want)
	}
	if pages != 7 { // 25 items, 4 a page
		t.Errorf("%d pages, want 7", pages)
	}
	_, err := client.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{
		Bucket: aws.String("pages"), ContinuationToken: aws.String("!not-a-token"),
	})
	if code := apiCode(err); code != "InvalidArgument" {
		t.Errorf("bad continuation token: err = %v, want InvalidArgument", err)
	}
	// A negative max-keys is refused by both list versions, as S3 does.
	_, err = client.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("pages"), MaxKeys: aws.Int32(-1)})
	if code := apiCode(err); code != "InvalidArgument" {
		t.Errorf("ListObjectsV2 with max-keys -1: err = %v, want InvalidArgument", err)
	}
	_, err = client.ListObjects(context.Background(), &s3.ListObjectsInput{Bucket: aws.String("pages"), MaxKeys: aws.Int32(-1)})
	if code := apiCode(err); code != "InvalidArgument" {
		t.Errorf("ListObjects with max-keys -1: err = %v, want InvalidArgument", err)
	}
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// HeadBucket, HeadObject, ranges and If-Match answer as S3 does.
func TestFakeHeadRangeIfMatch(t *testing.T) {
	f := s3server.StartFake(t)
	f.CreateBucket("hd")
	f.Put("hd", "k", []byte("0123456789"))
	client := f.Server().Client(t)
	ctx := context.Background()
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("hd")}); err != nil {
		t.Errorf("HeadBucket: %v", err)
	}
	var nf *types.NotFound
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("absent")}); !errors.As(err, &nf) {
		t.Errorf("HeadBucket of a missing bucket: %v, want NotFound", err)
	}
	head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("hd"), Key: aws.String("k")})
	if err != nil || aws.ToInt64(head.ContentLength) != 10 || aws.ToString(head.ETag) != `"781e5e245d69b566979b86e28d23f2c7"` {
		t.Fatalf("HeadObject = %+v, %v", head, err)
	}
	if _, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("hd"), Key: aws.String("nope")}); !errors.As(err, &nf) {
		t.Errorf("HeadObject of a missing key: %v, want NotFound", err)
	}
	for _, c := range []struct {
		rng, want, cr string
	}{
		{"bytes=2-4", "234", "bytes 2-4/10"},
		{"bytes=7-", "789", "bytes 7-9/10"},
		{"bytes=-2", "89", "bytes 8-9/10"},
		{"bytes=8-100", "89", "bytes 8-9/10"},
		{"", "0123456789", ""},
	} {
		in := &s3.GetObjectInput{Bucket: aws.String("hd"), Key: aws.String("k"), IfMatch: head.ETag}
		if c.rng != "" {
			in.Range = aws.String(c.rng)
		}
		out, err := client.GetObject(ctx, in)
		if err != nil {
			t.Errorf("GetObject %q: %v", c.rng, err)
			continue
		}
		b, _ := io.ReadAll(out.Body)
		out.Body.Close()
		if string(b) != c.want || aws.ToString(out.ContentRange) != c.cr {
			t.Errorf("GetObject %q = %q (Content-Range %q), want %q (%q)", c.rng, b, aws.ToString(out.ContentRange), c.want, c.cr)
		}
	}
	_, err = client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("hd"), Key: aws.String("k"), Range: aws.String("bytes=10-")})
	if code := apiCode(err); code != "InvalidRange" {
		t.Errorf("range past the end: %v, want InvalidRange", err)
	}
	_, err = client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("hd"), Key: aws.String("k"), IfMatch: aws.String(`"other"`)})
	if code := apiCode(err); code != "PreconditionFailed" {
		t.Errorf("If-Match of another ETag: %v, want PreconditionFailed", err)
	}
	resp, err := http.Post(f.Endpoint+"/hd/k", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("POST answered %s, want 501", resp.Status)
	}
}
