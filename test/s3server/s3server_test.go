package s3server_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"s3cachefs/test/s3server"
)

func TestServer(t *testing.T) {
	srv := s3server.Start(t)
	if !strings.HasPrefix(srv.Endpoint, "http://127.0.0.1:") {
		t.Errorf("Endpoint = %q, want loopback", srv.Endpoint)
	}
	srv.CreateBucket(t, "bkt")
	srv.Put(t, "bkt", "dir/one", []byte("1"))
	objs := make(map[string][]byte)
	for i := range 50 {
		objs[fmt.Sprintf("many/%02d", i)] = []byte(fmt.Sprint(i))
	}
	srv.PutMany(t, "bkt", objs)

	// The objects are on disk under Dir, as the posix backend promises.
	if b, err := os.ReadFile(filepath.Join(srv.Dir, "bkt", "many", "42")); err != nil || string(b) != "42" {
		t.Errorf("posix file = %q, %v", b, err)
	}
	out, err := srv.Client(t).ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{
		Bucket: aws.String("bkt"), Prefix: aws.String("many/"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Contents) != 50 {
		t.Errorf("listed %d objects, want 50", len(out.Contents))
	}
}

func TestEnv(t *testing.T) {
	srv := s3server.Start(t)
	env := srv.Env()
	for _, want := range []string{
		"AWS_ACCESS_KEY_ID=" + srv.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + srv.SecretKey,
		"AWS_REGION=" + srv.Region,
		"AWS_DEFAULT_REGION=" + srv.Region,
	} {
		if !slices.Contains(env, want) {
			t.Errorf("Env() lacks %q", want)
		}
	}
}

// proxyClient is an SDK client that goes through p with srv's keys.
func proxyClient(srv *s3server.Server, p *s3server.Proxy) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(p.Endpoint),
		Region:       srv.Region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, ""),
	})
}

func TestProxyCounts(t *testing.T) {
	srv := s3server.Start(t)
	srv.CreateBucket(t, "bkt")
	data := []byte("0123456789abcdef")
	srv.Put(t, "bkt", "dir/obj", data)
	p := srv.NewProxy(t)
	c := proxyClient(srv, p)
	ctx := context.Background()

	// Signed requests pass: the proxy keeps the Host the client signed.
	for range 2 {
		out, err := c.GetObject(ctx, &s3.GetObjectInput{
			Bucket: aws.String("bkt"), Key: aws.String("dir/obj"), Range: aws.String("bytes=2-11"),
		})
		if err != nil {
			t.Fatalf("GetObject through the proxy: %v", err)
		}
		b, err := io.ReadAll(out.Body)
		out.Body.Close()
		if err != nil || string(b) != "23456789ab" {
			t.Fatalf("GetObject body = %q, %v", b, err)
		}
	}
	if _, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("bkt"), Delimiter: aws.String("/")}); err != nil {
		t.Fatalf("ListObjectsV2: %v", err)
	}
	if _, err := c.ListObjects(ctx, &s3.ListObjectsInput{Bucket: aws.String("bkt")}); err != nil {
		t.Fatalf("ListObjects: %v", err)
	}
	if _, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/obj")}); err != nil {
		t.Fatalf("HeadObject: %v", err)
	}
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String("bkt"), Key: aws.String("new"), Body: strings.NewReader("new"),
	}); err != nil {
		t.Fatalf("PutObject: %v", err)
	}

	want := s3server.Counts{GetObject: 2, List: 2, Head: 1, Other: 1, GetBytes: 20}
	if got := p.Counts(); got != want {
		t.Errorf("Counts = %+v, want %+v", got, want)
	}
	p.Reset()
	if got := p.Counts(); got != (s3server.Counts{}) {
		t.Errorf("Counts after Reset = %+v, want zero", got)
	}
}

func TestProxyRejectsBadSignature(t *testing.T) {
	srv := s3server.Start(t)
	srv.CreateBucket(t, "bkt")
	p := srv.NewProxy(t)
	bad := *srv
	bad.SecretKey = "wrong"
	_, err := proxyClient(&bad, p).ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("bkt")})
	if err == nil {
		t.Fatal("a wrong secret was accepted through the proxy: signatures are not being checked")
	}
	if got := p.Counts().List; got == 0 {
		t.Errorf("List count = %d, want the failed request counted", got)
	}
}

func TestProxyModel(t *testing.T) {
	srv := s3server.Start(t)
	srv.CreateBucket(t, "bkt")
	data := make([]byte, 400_000)
	srv.Put(t, "bkt", "obj", data)
	const ttfb, rate = 50 * time.Millisecond, 2e6
	p, err := srv.StartProxy(s3server.ProxyOptions{TTFB: ttfb, Rate: rate})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := srv.ClientAt(p.Endpoint, 1)
	ctx := context.Background()

	start := time.Now()
	if _, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("obj")}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < ttfb {
		t.Errorf("HeadObject took %v, want at least the TTFB %v", d, ttfb)
	}
	start = time.Now()
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("obj")})
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, out.Body)
	out.Body.Close()
	if err != nil || n != int64(len(data)) {
		t.Fatalf("GetObject read %d bytes, %v", n, err)
	}
	// The first chunk goes out at once, then the link runs at rate.
	want := ttfb + time.Duration(float64(len(data)-128<<10)/rate*float64(time.Second))
	if d := time.Since(start); d < want {
		t.Errorf("GetObject of %d bytes took %v, want at least %v at %v B/s", n, d, want, rate)
	}
	if got := p.Counts(); got.GetObject != 1 || got.Head != 1 || got.GetBytes != n || got.Total() != 2 {
		t.Errorf("Counts = %+v, want 1 GET of %d bytes and 1 HEAD", got, n)
	}
}
