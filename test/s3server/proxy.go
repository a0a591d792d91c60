package s3server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Proxy is a reverse proxy on 127.0.0.1 in front of a Server that counts
// the requests passing through it, and can slow down (SetRate) or break
// (SetFaults, ReplaceMidRead, in faults.go) GetObject responses. Point a
// client at Proxy.Endpoint with the Server's credentials: the Host header
// goes upstream unchanged, so SigV4 signatures still verify. Bodies are
// streamed, not buffered.
type Proxy struct {
	Endpoint string // http://127.0.0.1:PORT

	// Set once in NewProxy.
	target    *url.URL
	transport *http.Transport
	client    *s3.Client // uploads for ReplaceMidRead

	inj injector

	getObject, list, head, other, getBytes atomic.Int64
	rate                                   atomic.Int64 // GetObject body bytes/s per request; 0 = unlimited
	exempt                                 atomic.Value // string: path suffix never throttled
}

// Counts are the requests a Proxy has seen since it started or was Reset.
type Counts struct {
	GetObject int64 // GET of a key
	List      int64 // GET of a bucket (ListObjects / ListObjectsV2)
	Head      int64 // any HEAD
	Other     int64 // anything else (PUT, DELETE, POST, service GETs)
	GetBytes  int64 // response body bytes of GetObject requests
}

// NewProxy starts a proxy in front of s, closed in t.Cleanup.
func (s *Server) NewProxy(t testing.TB) *Proxy {
	t.Helper()
	target, err := url.Parse(s.Endpoint)
	if err != nil {
		t.Fatalf("parse endpoint %q: %v", s.Endpoint, err)
	}
	transport := &http.Transport{DisableCompression: true}
	p := &Proxy{target: target, transport: transport, client: s.Client(t)}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			// The client signed the Host it dialled (this proxy);
			// the server must see that same Host to verify it.
			r.Out.Host = r.In.Host
		},
		// Without this the transport would ask for gzip on the
		// client's behalf and change lengths the client checks.
		Transport:      transport,
		ModifyResponse: p.countResponse,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.countRequest(r)
		if classify(r) == kindGetObject && p.serveFault(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		transport.CloseIdleConnections()
	})
	p.Endpoint = srv.URL
	return p
}

// Counts returns the counters.
func (p *Proxy) Counts() Counts {
	return Counts{
		GetObject: p.getObject.Load(), List: p.list.Load(), Head: p.head.Load(),
		Other: p.other.Load(), GetBytes: p.getBytes.Load(),
	}
}

// SetRate limits each GetObject response body to bytesPerSec, as a slow
// link would; 0 lifts the limit. It applies to bodies read from then on.
func (p *Proxy) SetRate(bytesPerSec int64) {
	p.rate.Store(bytesPerSec)
}

// Exempt keeps GetObjects of paths ending in suffix out of SetRate's
// limit, so a test can have one fast reader beside slow ones.
func (p *Proxy) Exempt(suffix string) {
	p.exempt.Store(suffix)
}

// Reset sets every counter to zero.
func (p *Proxy) Reset() {
	for _, c := range []*atomic.Int64{&p.getObject, &p.list, &p.head, &p.other, &p.getBytes} {
		c.Store(0)
	}
}

// kind is how the proxy classifies a request.
type kind int

const (
	kindOther kind = iota
	kindGetObject
	kindList
	kindHead
)

// classify sorts a path-style request: /BUCKET is a bucket, /BUCKET/KEY an
// object.
func classify(r *http.Request) kind {
	if r.Method == http.MethodHead {
		return kindHead
	}
	if r.Method != http.MethodGet {
		return kindOther
	}
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	q := r.URL.Query()
	switch {
	case bucket == "":
		return kindOther // ListBuckets
	case q.Has("list-type"):
		return kindList
	case key == "":
		if len(q) == 0 || q.Has("prefix") || q.Has("delimiter") || q.Has("marker") {
			return kindList
		}
		return kindOther // bucket sub-resources: ?location, ?versioning...
	default:
		return kindGetObject
	}
}

func (p *Proxy) countRequest(r *http.Request) {
	switch classify(r) {
	case kindGetObject:
		p.getObject.Add(1)
	case kindList:
		p.list.Add(1)
	case kindHead:
		p.head.Add(1)
	default:
		p.other.Add(1)
	}
}

// countResponse counts the body bytes of successful GetObjects as they
// stream to the client.
func (p *Proxy) countResponse(resp *http.Response) error {
	ok := resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent
	if ok && classify(resp.Request) == kindGetObject {
		body := &countingBody{ReadCloser: resp.Body, n: &p.getBytes, rate: &p.rate}
		if ex, _ := p.exempt.Load().(string); ex != "" && strings.HasSuffix(resp.Request.URL.Path, ex) {
			body.rate = new(atomic.Int64)
		}
		resp.Body = body
	}
	return nil
}

type countingBody struct {
	io.ReadCloser
	n    *atomic.Int64
	rate *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	rate := b.rate.Load()
	if rate > 0 {
		// Hand out at most a tenth of a second's worth, then take that
		// long: the body streams at about rate bytes per second.
		p = p[:min(int64(len(p)), max(rate/10, 1))]
	}
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if rate > 0 && n > 0 {
		time.Sleep(time.Duration(int64(n) * int64(time.Second) / rate))
	}
	return n, err
}
