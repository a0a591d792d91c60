package s3store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"s3cachefs/blockcache/s3store"
	"s3cachefs/index"
)

// The tests here check the client around GetRange: which failures are
// retried and how often, that many failing GETs at once all get their
// retries, timeouts, and the size of the connection pool.

// fakeWith serves h with a Store configured by opts (Bucket and Endpoint
// filled in), and returns the Store and a count of the connections the
// server accepted.
func fakeWith(t *testing.T, opts s3store.Options, h http.HandlerFunc) (*s3store.Store, *atomic.Int64) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	dials := new(atomic.Int64)
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			dials.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	useEnv(t, "AKIDFAKE", "secret", "us-east-1")
	opts.Bucket, opts.Endpoint, opts.ForcePathStyle = "fake", srv.URL, true
	s, err := s3store.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, dials
}

// ok10 answers bytes 0-9 of fakeObject.
func ok10(w http.ResponseWriter) {
	partial(w, "v1", "bytes 0-9/100", fakeObject[:10])
}

// resetConn cuts the client's connection with a TCP reset, after writing
// head (raw bytes of a response start, may be empty).
func resetConn(t *testing.T, w http.ResponseWriter, head string) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Error(err)
		return
	}
	buf.WriteString(head)
	buf.Flush()
	conn.(*net.TCPConn).SetLinger(0) // close sends RST, not FIN
	conn.Close()
}

func TestRetriedFailures(t *testing.T) {
	for _, c := range []struct {
		name string
		fail func(t *testing.T, w http.ResponseWriter, r *http.Request)
	}{
		{"500", func(t *testing.T, w http.ResponseWriter, r *http.Request) {
			s3Error(w, http.StatusInternalServerError, "InternalError")
		}},
		{"503 SlowDown", func(t *testing.T, w http.ResponseWriter, r *http.Request) {
			s3Error(w, http.StatusServiceUnavailable, "SlowDown")
		}},
		{"503 without code", func(t *testing.T, w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}},
		{"reset before headers", func(t *testing.T, w http.ResponseWriter, r *http.Request) {
			resetConn(t, w, "")
		}},
		{"headers stalled", func(t *testing.T, w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done() // until the client gives up on it
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var calls atomic.Int64
			s, _ := fakeWith(t, s3store.Options{Timeout: 300 * time.Millisecond},
				func(w http.ResponseWriter, r *http.Request) {
					if calls.Add(1) == 1 {
						c.fail(t, w, r)
						return
					}
					ok10(w)
				})
			got, err := readRange(s, "v1", 0, 10)
			if err != nil || string(got) != string(fakeObject[:10]) {
				t.Fatalf("GetRange after one failure = %q, %v", got, err)
			}
			if n := calls.Load(); n != 2 {
				t.Errorf("requests = %d, want 2", n)
			}
		})
	}
}

func TestMaxAttempts(t *testing.T) {
	var calls atomic.Int64
	s, _ := fakeWith(t, s3store.Options{MaxAttempts: 4}, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		s3Error(w, http.StatusInternalServerError, "InternalError")
	})
	_, err := readRange(s, "v1", 0, 10)
	if err == nil {
		t.Fatal("GetRange succeeded against a server that always fails")
	}
	for _, not := range []error{index.ErrStale, fs.ErrNotExist, s3store.ErrAccessDenied, context.DeadlineExceeded} {
		if errors.Is(err, not) {
			t.Errorf("a 500 gave %v, which wraps %v", err, not)
		}
	}
	if n := calls.Load(); n != 4 {
		t.Errorf("requests = %d, want MaxAttempts = 4", n)
	}
}

// TestRetriesDoNotStarve fails the first two requests of each of many
// parallel GETs. The SDK's default retry quota (a shared token bucket)
// would run dry and fail some of them without a retry; every one must get
// its retries and succeed.
func TestRetriesDoNotStarve(t *testing.T) {
	const gets = 120
	var mu sync.Mutex
	seen := map[string]int{}
	s, _ := fakeWith(t, s3store.Options{MaxConns: gets}, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path]++
		n := seen[r.URL.Path]
		mu.Unlock()
		if n <= 2 {
			s3Error(w, http.StatusInternalServerError, "InternalError")
			return
		}
		ok10(w)
	})
	var wg sync.WaitGroup
	errs := make(chan error, gets)
	for i := range gets {
		wg.Go(func() {
			rc, err := s.GetRange(context.Background(), fmt.Sprintf("k%d", i), "v1", 0, 10)
			if err == nil {
				_, err = io.Copy(io.Discard, rc)
				rc.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			if failed == 1 {
				t.Errorf("GetRange: %v", err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d GETs failed despite attempts left", failed, gets)
	}
}

func TestTimeoutsWrapErrTimeout(t *testing.T) {
	for _, c := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"no headers", func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}},
		{"body stalls", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("Content-Range", "bytes 0-99/100")
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(fakeObject[:40])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			const timeout = 200 * time.Millisecond
			s, _ := fakeWith(t, s3store.Options{Timeout: timeout, MaxAttempts: 2}, c.h)
			start := time.Now()
			_, err := readRange(s, "v1", 0, 100)
			if !errors.Is(err, s3store.ErrTimeout) {
				t.Errorf("GetRange = %v, want ErrTimeout", err)
			}
			if errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("GetRange = %v: a server's silence must not pass for the caller's deadline", err)
			}
			// Two attempts of the headers, or one body: a few timeouts.
			if d := time.Since(start); d > 10*timeout {
				t.Errorf("gave up after %v with a %v timeout", d, timeout)
			}
		})
	}
}

// TestSlowBodyIsNotCut: the timeout is for silence, not for the whole
// body; a body that keeps moving takes as long as it takes.
func TestSlowBodyIsNotCut(t *testing.T) {
	const timeout = 200 * time.Millisecond
	s, _ := fakeWith(t, s3store.Options{Timeout: timeout}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Content-Range", "bytes 0-9/100")
		w.Header().Set("Content-Length", "10")
		w.WriteHeader(http.StatusPartialContent)
		for i := range 10 {
			w.Write(fakeObject[i : i+1])
			w.(http.Flusher).Flush()
			time.Sleep(timeout / 4) // the link's pace: 10 bytes take 2.5 timeouts
		}
	})
	got, err := readRange(s, "v1", 0, 10)
	if err != nil || string(got) != string(fakeObject[:10]) {
		t.Fatalf("slow body = %q, %v", got, err)
	}
}

// TestResetMidBody: a body cut by a reset is an error for the reader (the
// SDK has returned by then), never a short success.
func TestResetMidBody(t *testing.T) {
	s, _ := fakeWith(t, s3store.Options{}, func(w http.ResponseWriter, r *http.Request) {
		head := "HTTP/1.1 206 Partial Content\r\nETag: \"v1\"\r\nContent-Range: bytes 0-99/100\r\n" +
			"Content-Length: 100\r\n\r\n" + string(fakeObject[:40])
		resetConn(t, w, head)
	})
	got, err := readRange(s, "v1", 0, 100)
	if err == nil || len(got) >= 100 {
		t.Fatalf("read %d bytes, %v; want an error before 100", len(got), err)
	}
}

// TestPoolSize: MaxConns caps the connections in use, and all of them
// are kept for reuse, also past the transport's default idle cap of 100.
func TestPoolSize(t *testing.T) {
	t.Run("cap", func(t *testing.T) {
		var inflight, peak atomic.Int64
		s, _ := fakeWith(t, s3store.Options{MaxConns: 4}, func(w http.ResponseWriter, r *http.Request) {
			n := inflight.Add(1)
			defer inflight.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(20 * time.Millisecond) // S3's latency, so that GETs overlap
			ok10(w)
		})
		parallelGets(t, s, 16)
		if p := peak.Load(); p > 4 {
			t.Errorf("%d requests in flight at once, want at most MaxConns = 4", p)
		}
	})
	t.Run("reuse", func(t *testing.T) {
		const conns = 120
		var barrier sync.WaitGroup
		barrier.Add(conns) // the first burst holds until all its GETs arrived
		var first atomic.Int64
		s, dials := fakeWith(t, s3store.Options{MaxConns: conns}, func(w http.ResponseWriter, r *http.Request) {
			if first.Add(1) <= conns {
				barrier.Done()
				barrier.Wait()
			}
			ok10(w)
		})
		parallelGets(t, s, conns)
		if d := dials.Load(); d != conns {
			t.Fatalf("first burst opened %d connections, want %d", d, conns)
		}
		parallelGets(t, s, conns)
		if d := dials.Load() - conns; d != 0 {
			t.Errorf("second burst opened %d new connections, want 0 (all %d reused)", d, conns)
		}
	})
}

// parallelGets runs n GetRanges at once and fails t on any error.
func parallelGets(t *testing.T, s *s3store.Store, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			got, err := readRange(s, "v1", 0, 10)
			if err != nil || len(got) != 10 {
				t.Errorf("GetRange = %d bytes, %v", len(got), err)
			}
		})
	}
	wg.Wait()
}
