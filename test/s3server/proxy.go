package s3server

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Proxy is a reverse proxy on 127.0.0.1 in front of a Server that counts
// the requests passing through it, can model S3's time to first byte and
// per-connection bandwidth (ProxyOptions), and can slow down (SetRate) or
// break (SetFaults, ReplaceMidRead, in faults.go) GetObject responses.
// Point a client at Proxy.Endpoint with the Server's credentials: the Host
// header goes upstream unchanged, so SigV4 signatures still verify. Bodies
// are streamed, not buffered. Every method may be called concurrently
// with requests.
type Proxy struct {
	Endpoint string // http://127.0.0.1:PORT

	// Set once in StartProxy.
	opts      ProxyOptions
	target    *url.URL
	transport *http.Transport
	client    *s3.Client // uploads for ReplaceMidRead
	srv       *http.Server
	served    chan struct{} // closed when srv.Serve has returned
	logFile   *os.File      // ProxyOptions.Log; nil when there is none

	inj injector

	getObject, list, head, other, getBytes atomic.Int64
	rate                                   atomic.Int64 // GetObject body bytes/s per connection; 0 = unlimited
	exempt                                 atomic.Value // string: path suffix never throttled by rate
}

// ProxyOptions model S3 between a Proxy's clients and the server. The
// zero value forwards every request at once and at full speed.
type ProxyOptions struct {
	// TTFB delays every request this long before it is forwarded: the
	// time S3 takes to the first byte of any response.
	TTFB time.Duration
	// Rate limits the response bodies of each client connection (all its
	// requests, of every kind) to this many bytes per second, as S3
	// limits a connection; 0 = unlimited. SetRate adds a limit of its own
	// on GetObject bodies; the lower of the two applies.
	Rate float64
	// Log is the file that the proxy's errors are appended to; "" sends
	// them to the standard logger.
	Log string
}

// Counts are the requests a Proxy has seen since it started or was Reset.
type Counts struct {
	GetObject int64 // GET of a key
	List      int64 // GET of a bucket (ListObjects / ListObjectsV2)
	Head      int64 // any HEAD
	Other     int64 // anything else (PUT, DELETE, POST, service GETs)
	GetBytes  int64 // response body bytes of successful GetObject requests
}

// Total is the number of requests of every kind.
func (c Counts) Total() int64 { return c.GetObject + c.List + c.Head + c.Other }

// connPacerKey finds a client connection's pacer in a request's context.
type connPacerKey struct{}

// StartProxy starts a proxy in front of s on a free port of 127.0.0.1.
// Close stops it.
func (s *Server) StartProxy(o ProxyOptions) (*Proxy, error) {
	target, err := url.Parse(s.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("parse endpoint %q: %w", s.Endpoint, err)
	}
	p := &Proxy{
		opts: o, target: target, client: s.ClientAt(s.Endpoint, 0), served: make(chan struct{}),
		// Enough idle connections upstream for every GET in flight; the
		// default of 2 per host would redial for most requests.
		transport: &http.Transport{
			// Else the transport would ask for gzip on the client's
			// behalf and change lengths the client checks.
			DisableCompression:  true,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	var errLog *log.Logger // nil: the standard logger
	if o.Log != "" {
		if p.logFile, err = os.OpenFile(o.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			return nil, err
		}
		errLog = log.New(p.logFile, "proxy: ", log.LstdFlags)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		p.closeLog()
		return nil, err
	}
	p.Endpoint = "http://" + ln.Addr().String()
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			// The client signed the Host it dialled (this proxy);
			// the server must see that same Host to verify it.
			r.Out.Host = r.In.Host
		},
		Transport:      p.transport,
		FlushInterval:  -1, // write each paced chunk at once
		ModifyResponse: p.wrapBody,
		ErrorLog:       errLog,
	}
	p.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.serve(rp, w, r) }),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          errLog,
		// Each client connection gets its own pacer: the limit is per
		// connection, as S3's is, not per request or for all.
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, connPacerKey{}, new(pacer))
		},
	}
	go func() {
		defer close(p.served)
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

// NewProxy starts a proxy in front of s with no model (ProxyOptions{}),
// closed in t.Cleanup.
func (s *Server) NewProxy(t testing.TB) *Proxy {
	t.Helper()
	p, err := s.StartProxy(ProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// Close stops the proxy and drops its connections, those of requests in
// flight too.
func (p *Proxy) Close() error {
	err := p.srv.Close()
	<-p.served
	p.transport.CloseIdleConnections()
	p.closeLog()
	return err
}

func (p *Proxy) closeLog() {
	if p.logFile != nil {
		_ = p.logFile.Close()
	}
}

// serve counts the request, waits the time to first byte, and answers it
// with a fault or forwards it.
func (p *Proxy) serve(rp *httputil.ReverseProxy, w http.ResponseWriter, r *http.Request) {
	p.countRequest(r)
	if p.opts.TTFB > 0 {
		t := time.NewTimer(p.opts.TTFB)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if classify(r) == kindGetObject && p.serveFault(w, r) {
		return
	}
	rp.ServeHTTP(w, r)
}

// Counts returns the counters.
func (p *Proxy) Counts() Counts {
	return Counts{
		GetObject: p.getObject.Load(), List: p.list.Load(), Head: p.head.Load(),
		Other: p.other.Load(), GetBytes: p.getBytes.Load(),
	}
}

// SetRate limits the GetObject response bodies of each connection to
// bytesPerSec, as a slow link would; 0 lifts the limit. It applies to
// every body from its next read on.
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

// wrapBody paces a response body as ProxyOptions.Rate and SetRate say,
// and counts the body bytes of successful GetObjects as they stream to
// the client.
func (p *Proxy) wrapBody(resp *http.Response) error {
	r := resp.Request
	ok := resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent
	get := ok && classify(r) == kindGetObject
	if !get && p.opts.Rate <= 0 {
		return nil
	}
	b := &pacedBody{ReadCloser: resp.Body, ctx: r.Context(), rate: p.opts.Rate}
	b.pacer, _ = r.Context().Value(connPacerKey{}).(*pacer)
	if get {
		b.count = &p.getBytes
		if ex, _ := p.exempt.Load().(string); ex == "" || !strings.HasSuffix(r.URL.Path, ex) {
			b.link = &p.rate
		}
	}
	resp.Body = b
	return nil
}

// pacer spaces a client connection's bytes at a rate.
type pacer struct {
	mu   sync.Mutex // guards next
	next time.Time  // when the link is free for the next byte
}

// maxCredit is how far behind schedule a connection may fall (after a
// late wake-up) and catch up at full speed; an idle link earns no more.
const maxCredit = 5 * time.Millisecond

// take books n bytes at rate bytes/s on the link and returns how long to
// wait before they may go out.
func (pc *pacer) take(n int, rate float64) time.Duration {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	now := time.Now()
	if now.Sub(pc.next) > maxCredit {
		pc.next = now
	}
	pc.next = pc.next.Add(time.Duration(float64(n) / rate * float64(time.Second)))
	return pc.next.Sub(now)
}

// pacedChunk bounds one read of a paced body so that a chunk's wait stays
// around a millisecond at 90 MB/s and the stream stays smooth; a slower
// link reads a tenth of a second's worth at a time.
const pacedChunk = 128 << 10

// pacedBody is a response body sent at the lower of rate and link.
type pacedBody struct {
	io.ReadCloser
	ctx   context.Context
	pacer *pacer        // the client connection's; nil: not paced
	rate  float64       // ProxyOptions.Rate
	link  *atomic.Int64 // SetRate's limit; nil: exempt, or not a GetObject
	count *atomic.Int64 // nil: not counted
}

// rateNow is the body's limit in bytes/s now; 0 = unlimited.
func (b *pacedBody) rateNow() float64 {
	if b.pacer == nil {
		return 0
	}
	r := b.rate
	if b.link != nil {
		if l := float64(b.link.Load()); l > 0 && (r <= 0 || l < r) {
			r = l
		}
	}
	return r
}

func (b *pacedBody) Read(p []byte) (int, error) {
	rate := b.rateNow()
	if rate > 0 {
		p = p[:min(len(p), pacedChunk, max(int(rate/10), 1))]
	}
	n, err := b.ReadCloser.Read(p)
	if b.count != nil {
		b.count.Add(int64(n))
	}
	if rate > 0 && n > 0 {
		if d := b.pacer.take(n, rate); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-b.ctx.Done():
				t.Stop()
				return n, b.ctx.Err()
			}
		}
	}
	return n, err
}
