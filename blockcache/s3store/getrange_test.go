package s3store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"s3cachefs/blockcache/s3store"
	"s3cachefs/index"
)

// The tests here use a fake S3 that misbehaves in ways versitygw never
// does (it honours If-Match and Range), to check GetRange's own checks.

// fakeObject is what the fake serves: 100 bytes, ETag "v1".
var fakeObject = func() []byte {
	b := make([]byte, 100)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}()

// fakeS3 serves h and returns a Store pointed at it. Its timeout is
// generous: a busy machine (the race detector, every package at once) can
// take longer than a short one to answer, and a timeout is retried, which
// would change the requests the tests count. fakeS3Timeout sets it.
func fakeS3(t *testing.T, h http.HandlerFunc) *s3store.Store {
	t.Helper()
	return fakeS3Timeout(t, h, 10*time.Second)
}

// fakeS3Timeout is fakeS3 with the Store's timeout given.
func fakeS3Timeout(t *testing.T, h http.HandlerFunc, timeout time.Duration) *s3store.Store {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	useEnv(t, "AKIDFAKE", "secret", "us-east-1")
	s, err := s3store.New(context.Background(), s3store.Options{
		Bucket: "fake", Endpoint: srv.URL, ForcePathStyle: true, Timeout: timeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// partial writes a 206 for [first, last] of fakeObject with the given
// ETag and Content-Range, and body bytes body.
func partial(w http.ResponseWriter, etag, contentRange string, body []byte) {
	w.Header().Set("ETag", `"`+etag+`"`)
	w.Header().Set("Content-Range", contentRange)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusPartialContent)
	w.Write(body)
}

func s3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>fake</Message></Error>`, code)
}

func readRange(s *s3store.Store, etag string, off, n int64) ([]byte, error) {
	rc, err := s.GetRange(context.Background(), "key", etag, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestGetRangeSendsPinnedRange(t *testing.T) {
	var ifMatch, rangeHdr atomic.Value
	s := fakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		ifMatch.Store(r.Header.Values("If-Match"))
		rangeHdr.Store(r.Header.Get("Range"))
		partial(w, "v1", "bytes 10-19/100", fakeObject[10:20])
	})
	got, err := readRange(s, "v1", 10, 10)
	if err != nil || string(got) != string(fakeObject[10:20]) {
		t.Fatalf("GetRange = %v, %v", got, err)
	}
	if v := ifMatch.Load().([]string); len(v) != 1 || v[0] != `"v1"` {
		t.Errorf("If-Match = %q, want one quoted ETag", v)
	}
	if v := rangeHdr.Load().(string); v != "bytes=10-19" {
		t.Errorf("Range = %q, want bytes=10-19", v)
	}
	if _, err := readRange(s, "", 10, 10); err != nil {
		t.Fatal(err)
	}
	if v := ifMatch.Load().([]string); len(v) != 0 {
		t.Errorf("If-Match = %q for an object without ETag, want none", v)
	}
}

func TestGetRangeRejectsWrongResponses(t *testing.T) {
	for _, c := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"other ETag despite If-Match", func(w http.ResponseWriter, r *http.Request) {
			partial(w, "v2", "bytes 10-19/100", fakeObject[10:20])
		}},
		{"other range", func(w http.ResponseWriter, r *http.Request) {
			partial(w, "v1", "bytes 0-9/100", fakeObject[0:10])
		}},
		{"shorter object", func(w http.ResponseWriter, r *http.Request) {
			partial(w, "v1", "bytes 10-14/15", fakeObject[10:15])
		}},
		{"range ignored", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"v1"`)
			w.Write(fakeObject[:10]) // a 10-byte object served whole
		}},
		{"412", func(w http.ResponseWriter, r *http.Request) {
			s3Error(w, http.StatusPreconditionFailed, "PreconditionFailed")
		}},
		{"416", func(w http.ResponseWriter, r *http.Request) {
			s3Error(w, http.StatusRequestedRangeNotSatisfiable, "InvalidRange")
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := fakeS3(t, c.h)
			_, err := readRange(s, "v1", 10, 10)
			if !errors.Is(err, index.ErrStale) {
				t.Errorf("GetRange = %v, want index.ErrStale", err)
			}
		})
	}
}

func TestGetRangeWholeObjectAtZero(t *testing.T) {
	// A server may answer a range covering the whole object with a plain
	// 200; that is still exactly the bytes asked for.
	s := fakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		w.Write(fakeObject)
	})
	got, err := readRange(s, "v1", 0, 100)
	if err != nil || len(got) != 100 {
		t.Errorf("GetRange = %d bytes, %v", len(got), err)
	}
}

func TestGetRangeTruncatedBody(t *testing.T) {
	for _, c := range []struct {
		name string
		h    http.HandlerFunc
	}{
		// Content-Length promised, connection closed early.
		{"content-length", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("Content-Range", "bytes 0-99/100")
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(fakeObject[:40])
		}},
		// Chunked, no length: the body ends cleanly, but short.
		{"chunked", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("Content-Range", "bytes 0-99/100")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(fakeObject[:40])
			w.(http.Flusher).Flush()
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := fakeS3(t, c.h)
			got, err := readRange(s, "v1", 0, 100)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("read = %d bytes, %v; want io.ErrUnexpectedEOF", len(got), err)
			}
			if len(got) != 40 {
				t.Errorf("read %d bytes before the error, want the 40 sent", len(got))
			}
		})
	}
}

func TestGetRangeStalledBody(t *testing.T) {
	s := fakeS3Timeout(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Content-Range", "bytes 0-99/100")
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusPartialContent)
		w.Write(fakeObject[:40])
		w.(http.Flusher).Flush()
		<-r.Context().Done() // until the client gives up
	}, 500*time.Millisecond)
	done := make(chan error, 1)
	go func() {
		_, err := readRange(s, "v1", 0, 100)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a stalled body read without error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled body hung the reader past the timeout")
	}
}

func TestGetRangeErrorClasses(t *testing.T) {
	for _, c := range []struct {
		status int
		code   string
		want   error
	}{
		{http.StatusNotFound, "NoSuchKey", fs.ErrNotExist},
		{http.StatusNotFound, "NoSuchBucket", s3store.ErrNoBucket},
		{http.StatusForbidden, "AccessDenied", s3store.ErrAccessDenied},
		{http.StatusForbidden, "SomethingElse", s3store.ErrAccessDenied},
		{http.StatusNotFound, "", fs.ErrNotExist},
	} {
		t.Run(fmt.Sprint(c.status, c.code), func(t *testing.T) {
			s := fakeS3(t, func(w http.ResponseWriter, r *http.Request) {
				if c.code == "" {
					w.WriteHeader(c.status)
					return
				}
				s3Error(w, c.status, c.code)
			})
			if _, err := readRange(s, "v1", 0, 10); !errors.Is(err, c.want) {
				t.Errorf("GetRange = %v, want %v", err, c.want)
			}
		})
	}
}

func TestGetRangeRetries5xx(t *testing.T) {
	var calls atomic.Int64
	s := fakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			s3Error(w, http.StatusServiceUnavailable, "SlowDown")
			return
		}
		partial(w, "v1", "bytes 0-9/100", fakeObject[:10])
	})
	if _, err := readRange(s, "v1", 0, 10); err != nil {
		t.Errorf("GetRange after two 503s: %v (the SDK retries 3 times)", err)
	}
	if got := calls.Load(); got != 3 {
		t.Errorf("requests = %d, want 3", got)
	}
	if got := s.Stats().Gets; got != 1 {
		t.Errorf("Stats.Gets = %d, want 1 (one per GetRange)", got)
	}
}
