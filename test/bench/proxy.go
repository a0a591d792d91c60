// proxy.go is the reverse proxy that models S3 between every client and
// versitygw: a fixed delay before the first byte of each response, a
// bandwidth limit per client connection on response bodies, and request
// counts by kind so "zero requests" figures are measured.

package main

import (
	"context"
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
	"time"
)

// proxy is a running modelling proxy.
type proxy struct {
	endpoint string // http://127.0.0.1:PORT
	ttfb     time.Duration
	rate     float64 // bytes/s per client connection; 0: unlimited

	srv       *http.Server
	transport *http.Transport
	served    chan struct{} // closed when Serve returns

	getObject, list, head, other, getBytes atomic.Int64
}

// counts are the requests a proxy saw since it started or was reset.
type counts struct {
	GetObject, List, Head, Other int64
	GetBytes                     int64 // body bytes of GetObject responses
}

// total is every request of any kind.
func (c counts) total() int64 { return c.GetObject + c.List + c.Head + c.Other }

// connPacerKey finds a connection's pacer in a request context.
type connPacerKey struct{}

// startProxy serves on a free port of 127.0.0.1 in front of upstream.
func startProxy(upstream string, ttfb time.Duration, rate float64, logPath string) (*proxy, error) {
	target, err := url.Parse(upstream)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		ln.Close()
		return nil, err
	}
	p := &proxy{endpoint: "http://" + ln.Addr().String(), ttfb: ttfb, rate: rate, served: make(chan struct{})}
	// Enough idle connections upstream for every GET in flight; the
	// default of 2 per host would redial for most requests.
	p.transport = &http.Transport{
		DisableCompression:  true, // else lengths the client checks change
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			// The client signed the Host it dialled (this proxy); the
			// server must see that Host to verify the signature.
			r.Out.Host = r.In.Host
		},
		Transport:      p.transport,
		FlushInterval:  -1, // write each paced chunk at once
		ModifyResponse: p.paceBody,
		ErrorLog:       log.New(logFile, "proxy: ", log.LstdFlags),
	}
	p.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.serve(rp, w, r) }),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(logFile, "proxy: ", log.LstdFlags),
		// Each client connection gets its own pacer: the limit is per
		// connection, as S3's is, not per request or for all.
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, connPacerKey{}, &pacer{rate: rate})
		},
	}
	go func() {
		defer close(p.served)
		defer logFile.Close()
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

// serve counts the request, waits the time to first byte, and forwards it.
func (p *proxy) serve(rp *httputil.ReverseProxy, w http.ResponseWriter, r *http.Request) {
	p.count(r)
	if p.ttfb > 0 {
		t := time.NewTimer(p.ttfb)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	rp.ServeHTTP(w, r)
}

// close stops the proxy and drops its connections.
func (p *proxy) close() error {
	err := p.srv.Close()
	<-p.served
	p.transport.CloseIdleConnections()
	return err
}

// counts returns the counters.
func (p *proxy) counts() counts {
	return counts{GetObject: p.getObject.Load(), List: p.list.Load(), Head: p.head.Load(),
		Other: p.other.Load(), GetBytes: p.getBytes.Load()}
}

// reset sets every counter to zero.
func (p *proxy) reset() {
	for _, c := range []*atomic.Int64{&p.getObject, &p.list, &p.head, &p.other, &p.getBytes} {
		c.Store(0)
	}
}

// isGetObject tells a path-style GET of a key (/BUCKET/KEY) from a bucket
// request (/BUCKET?list-type=2...).
func isGetObject(r *http.Request) bool {
	_, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	return r.Method == http.MethodGet && key != ""
}

func (p *proxy) count(r *http.Request) {
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodHead:
		p.head.Add(1)
	case isGetObject(r):
		p.getObject.Add(1)
	case r.Method == http.MethodGet && r.URL.Path != "/" &&
		(q.Has("list-type") || q.Has("prefix") || q.Has("delimiter") || q.Has("marker") || len(q) == 0):
		p.list.Add(1)
	default:
		p.other.Add(1)
	}
}

// paceBody limits every response body to the connection's rate and counts
// GetObject body bytes.
func (p *proxy) paceBody(resp *http.Response) error {
	pc, _ := resp.Request.Context().Value(connPacerKey{}).(*pacer)
	b := &pacedBody{ReadCloser: resp.Body, pacer: pc, ctx: resp.Request.Context()}
	if isGetObject(resp.Request) {
		b.count = &p.getBytes
	}
	resp.Body = b
	return nil
}

// pacer spaces a connection's bytes at rate bytes per second.
type pacer struct {
	rate float64
	mu   sync.Mutex // guards next
	next time.Time  // when the link is free for the next byte
}

// maxCredit is how far behind schedule a connection may fall (after a
// late wake-up) and catch up at full speed; an idle link earns no more.
const maxCredit = 5 * time.Millisecond

// take books n bytes on the link and returns how long to wait before
// they may go out.
func (pc *pacer) take(n int) time.Duration {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	now := time.Now()
	if now.Sub(pc.next) > maxCredit {
		pc.next = now
	}
	pc.next = pc.next.Add(time.Duration(float64(n) / pc.rate * float64(time.Second)))
	return pc.next.Sub(now)
}

// pacedChunk bounds one read so a chunk's wait stays around a
// millisecond at 90 MB/s and the stream stays smooth.
const pacedChunk = 128 << 10

type pacedBody struct {
	io.ReadCloser
	pacer *pacer
	ctx   context.Context
	count *atomic.Int64 // nil: not a GetObject
}

func (b *pacedBody) Read(p []byte) (int, error) {
	paced := b.pacer != nil && b.pacer.rate > 0
	if paced && len(p) > pacedChunk {
		p = p[:pacedChunk]
	}
	n, err := b.ReadCloser.Read(p)
	if b.count != nil {
		b.count.Add(int64(n))
	}
	if paced && n > 0 {
		if d := b.pacer.take(n); d > 0 {
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
