package s3store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"s3cachefs/blockcache/s3store"
	"s3cachefs/blockcache/s3store/storetest"
	"s3cachefs/test/s3server"
)

// useServerEnv points the SDK's default chain at srv's keys.
func useServerEnv(t *testing.T, srv *s3server.Server) {
	useEnv(t, srv.AccessKey, srv.SecretKey, srv.Region)
}

// useEnv makes the SDK's default chain find these keys and nothing else:
// no shared config files, no instance metadata, no endpoint override.
func useEnv(t *testing.T, accessKey, secretKey, region string) {
	none := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           accessKey,
		"AWS_SECRET_ACCESS_KEY":       secretKey,
		"AWS_SESSION_TOKEN":           "",
		"AWS_REGION":                  region,
		"AWS_DEFAULT_REGION":          region,
		"AWS_PROFILE":                 "",
		"AWS_CONFIG_FILE":             none,
		"AWS_SHARED_CREDENTIALS_FILE": none,
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_ENDPOINT_URL":            "",
		"AWS_ENDPOINT_URL_S3":         "",
	} {
		t.Setenv(k, v)
	}
}

func newStore(t *testing.T, endpoint, bucket string) *s3store.Store {
	t.Helper()
	s, err := s3store.New(context.Background(), s3store.Options{
		Bucket: bucket, Endpoint: endpoint, ForcePathStyle: true,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := s3server.Start(t)
	useServerEnv(t, srv)
	client := srv.Client(t)
	var buckets atomic.Int64
	storetest.Run(t, storetest.Harness{New: func(t *testing.T) storetest.Fixture {
		bucket := fmt.Sprintf("conformance-%d", buckets.Add(1))
		srv.CreateBucket(t, bucket)
		return storetest.Fixture{
			Store:   newStore(t, srv.Endpoint, bucket),
			Put:     func(t testing.TB, key string, data []byte) { srv.Put(t, bucket, key, data) },
			PutMany: func(t testing.TB, objs map[string][]byte) { srv.PutMany(t, bucket, objs) },
			Delete: func(t testing.TB, key string) {
				_, err := client.DeleteObject(context.Background(), &s3.DeleteObjectInput{
					Bucket: aws.String(bucket), Key: aws.String(key),
				})
				if err != nil {
					t.Fatalf("delete %s: %v", key, err)
				}
			},
			RemoveBucket: func(t testing.TB) {
				_, err := client.DeleteBucket(context.Background(), &s3.DeleteBucketInput{Bucket: aws.String(bucket)})
				if err != nil {
					t.Fatalf("delete bucket %s: %v", bucket, err)
				}
			},
		}
	}})
}

func TestCheck(t *testing.T) {
	srv := s3server.Start(t)
	srv.CreateBucket(t, "present")
	ctx := context.Background()

	t.Run("ok", func(t *testing.T) {
		useServerEnv(t, srv)
		if err := newStore(t, srv.Endpoint, "present").Check(ctx, "some/prefix/"); err != nil {
			t.Errorf("Check: %v", err)
		}
	})
	t.Run("endpoint from AWS_ENDPOINT_URL", func(t *testing.T) {
		useServerEnv(t, srv)
		t.Setenv("AWS_ENDPOINT_URL", srv.Endpoint)
		if err := newStore(t, "", "present").Check(ctx, ""); err != nil {
			t.Errorf("Check: %v", err)
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		useServerEnv(t, srv)
		err := newStore(t, srv.Endpoint, "absent").Check(ctx, "")
		if !errors.Is(err, s3store.ErrNoBucket) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Check = %v, want ErrNoBucket and fs.ErrNotExist", err)
		}
		_, err = newStore(t, srv.Endpoint, "absent").List(ctx, "")
		if !errors.Is(err, s3store.ErrNoBucket) {
			t.Errorf("List = %v, want ErrNoBucket", err)
		}
	})
	// Each case overrides the server's credentials in the environment.
	for name, env := range map[string]map[string]string{
		"wrong secret":   {"AWS_SECRET_ACCESS_KEY": "not-the-secret"},
		"unknown key id": {"AWS_ACCESS_KEY_ID": "nobody"},
		"no credentials": {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
	} {
		t.Run(name, func(t *testing.T) {
			useServerEnv(t, srv)
			for k, v := range env {
				t.Setenv(k, v)
			}
			err := newStore(t, srv.Endpoint, "present").Check(ctx, "")
			if !errors.Is(err, s3store.ErrAccessDenied) {
				t.Errorf("Check = %v, want ErrAccessDenied", err)
			}
		})
	}
	t.Run("closed port", func(t *testing.T) {
		useServerEnv(t, srv)
		err := newStore(t, "http://"+closedAddr(t), "present").Check(ctx, "")
		if !errors.Is(err, s3store.ErrUnreachable) {
			t.Errorf("Check = %v, want ErrUnreachable", err)
		}
	})
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestRequestsThroughProxy checks what goes over the wire: one request per
// list page and per GetRange, with the bytes asked for and no more, and
// that signatures survive the test proxy.
func TestRequestsThroughProxy(t *testing.T) {
	srv := s3server.Start(t)
	useServerEnv(t, srv)
	srv.CreateBucket(t, "wire")
	objs := make(map[string][]byte)
	for i := range 2100 {
		objs[fmt.Sprintf("d/%04d", i)] = []byte("x")
	}
	srv.PutMany(t, "wire", objs)
	srv.Put(t, "wire", "big", make([]byte, 1<<20))
	p := srv.NewProxy(t)
	s := newStore(t, p.Endpoint, "wire")
	ctx := context.Background()

	res, err := s.List(ctx, "d/")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Objects) != 2100 {
		t.Errorf("listed %d objects, want 2100", len(res.Objects))
	}
	root, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	big := root.Objects[0]
	rc, err := s.GetRange(ctx, big.Key, big.ETag, 4096, 65536)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, rc)
	rc.Close()
	if err != nil || n != 65536 {
		t.Fatalf("read %d, %v; want 65536", n, err)
	}

	// 2100 keys are three pages of 1000; the root one more.
	wantWire := s3server.Counts{GetObject: 1, List: 4, GetBytes: 65536}
	if got := p.Counts(); got != wantWire {
		t.Errorf("proxy counts = %+v, want %+v", got, wantWire)
	}
	wantStats := s3store.Stats{Gets: 1, Lists: 4, BytesRead: 65536}
	if got := s.Stats(); got != wantStats {
		t.Errorf("Stats = %+v, want %+v", got, wantStats)
	}
}
