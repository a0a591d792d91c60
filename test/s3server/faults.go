package s3server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Faults says what a Proxy does wrong to GetObject requests. Each request
// of a key that Keys selects draws one number from a generator seeded with
// Seed and gets at most one fault: the shares are its chances, and add up
// to at most 1. Lists, heads and other requests pass untouched, so a test
// sees the read path fail and nothing else.
type Faults struct {
	// Seed makes the draws repeatable for one order of requests.
	Seed uint64
	// Keys limits the faults to GetObjects whose key ends with it; ""
	// selects every key.
	Keys string

	// Shares answered with an S3 error instead of the object: 500
	// InternalError, 503 ServiceUnavailable, 503 SlowDown.
	InternalError, Unavailable, SlowDown float64
	// Share of bodies cut partway by a TCP reset.
	Reset float64
	// Share of bodies that end partway: the connection closes cleanly
	// before the promised Content-Length.
	Truncate float64
	// Share of bodies that stop partway for StallFor (or until the
	// client hangs up), then end as a truncated one.
	Stall float64
	// StallFor is how long a stalled body stays silent; default 10s.
	StallFor time.Duration
}

// FaultCounts are the faults a Proxy injected since it started.
type FaultCounts struct {
	Errors    int64 // 500 and 503 answers
	Resets    int64
	Truncated int64
	Stalls    int64
	Replaced  int64 // objects replaced mid-read (ReplaceMidRead)
}

// Total is the number of faults of every kind.
func (c FaultCounts) Total() int64 {
	return c.Errors + c.Resets + c.Truncated + c.Stalls + c.Replaced
}

// fault is the one thing done wrong to a request.
type fault int

const (
	faultNone fault = iota
	faultInternal
	faultUnavailable
	faultSlowDown
	faultReset
	faultTruncate
	faultStall
)

// injector holds a Proxy's fault settings and counts.
type injector struct {
	mu      sync.Mutex // guards faults, rng and replace
	faults  Faults
	rng     *rand.Rand
	replace *replacement

	errors, resets, truncated, stalls, replaced atomic.Int64
}

// replacement is an armed ReplaceMidRead.
type replacement struct {
	path   string // /BUCKET/KEY
	upload func(context.Context) error
	done   chan error
}

// SetFaults makes the proxy inject f from now on; Faults{} stops it.
// Requests already being answered keep the fault they drew.
func (p *Proxy) SetFaults(f Faults) {
	if f.StallFor <= 0 {
		f.StallFor = 10 * time.Second
	}
	p.inj.mu.Lock()
	defer p.inj.mu.Unlock()
	p.inj.faults = f
	p.inj.rng = rand.New(rand.NewPCG(f.Seed, 0x5eed))
}

// Faults returns the counts of faults injected so far.
func (p *Proxy) Faults() FaultCounts {
	i := &p.inj
	return FaultCounts{
		Errors: i.errors.Load(), Resets: i.resets.Load(), Truncated: i.truncated.Load(),
		Stalls: i.stalls.Load(), Replaced: i.replaced.Load(),
	}
}

// ReplaceMidRead arms a one-shot fault: the next GetObject of bucket/key
// that returns a body sends about half of it, then data is uploaded to the
// server as the key's new version, then the rest of the old body follows
// (the proxy holds the whole old body first, so that this response is one
// version whatever the server does with a file being replaced). The
// channel yields the upload's error, nil on success, once the body is sent.
func (p *Proxy) ReplaceMidRead(bucket, key string, data []byte) <-chan error {
	r := &replacement{
		path: "/" + bucket + "/" + key,
		upload: func(ctx context.Context) error {
			return put(ctx, p.client, bucket, key, data)
		},
		done: make(chan error, 1),
	}
	p.inj.mu.Lock()
	defer p.inj.mu.Unlock()
	p.inj.replace = r
	return r.done
}

// draw picks the fault for a GetObject of path, and returns the armed
// replacement instead when it is for path (taking it).
func (i *injector) draw(path string) (fault, *replacement) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if r := i.replace; r != nil && r.path == path {
		i.replace = nil
		return faultNone, r
	}
	f := i.faults
	if i.rng == nil || !strings.HasSuffix(path, f.Keys) {
		return faultNone, nil
	}
	u := i.rng.Float64()
	for _, c := range []struct {
		share float64
		fault fault
	}{
		{f.InternalError, faultInternal}, {f.Unavailable, faultUnavailable},
		{f.SlowDown, faultSlowDown}, {f.Reset, faultReset},
		{f.Truncate, faultTruncate}, {f.Stall, faultStall},
	} {
		if u < c.share {
			return c.fault, nil
		}
		u -= c.share
	}
	return faultNone, nil
}

// cutAt returns where to cut a body of n bytes: somewhere in its middle
// 80%, drawn from the seeded generator.
func (i *injector) cutAt(n int64) int64 {
	i.mu.Lock()
	defer i.mu.Unlock()
	return n/10 + int64(float64(n*8/10)*i.rng.Float64())
}

// serveFault answers a GetObject with a fault, if one is drawn, and
// reports whether it did.
func (p *Proxy) serveFault(w http.ResponseWriter, r *http.Request) bool {
	f, repl := p.inj.draw(r.URL.Path)
	switch f {
	case faultNone:
		if repl == nil {
			return false
		}
		p.replaceMidRead(w, r, repl)
	case faultInternal:
		p.inj.errors.Add(1)
		s3ErrorReply(w, http.StatusInternalServerError, "InternalError")
	case faultUnavailable:
		p.inj.errors.Add(1)
		s3ErrorReply(w, http.StatusServiceUnavailable, "ServiceUnavailable")
	case faultSlowDown:
		p.inj.errors.Add(1)
		s3ErrorReply(w, http.StatusServiceUnavailable, "SlowDown")
	default:
		p.breakBody(w, r, f)
	}
	return true
}

// s3ErrorReply writes an S3 error document, as S3 answers.
func s3ErrorReply(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+
		`<Error><Code>%s</Code><Message>injected by the test proxy</Message></Error>`, code)
}

// upstream sends r to the server and returns its response.
func (p *Proxy) upstream(r *http.Request) (*http.Response, error) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = p.target.Scheme, p.target.Host
	out.Host = r.Host // the client signed the proxy's Host
	return p.transport.RoundTrip(out)
}

// forwardHead copies resp's status and headers to w.
func forwardHead(w http.ResponseWriter, resp *http.Response) {
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	if resp.ContentLength >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(resp.StatusCode)
}

// breakBody forwards the object's response and breaks its body partway
// as f says. Answers other than a body (a 412, a 404) pass whole.
func (p *Proxy) breakBody(w http.ResponseWriter, r *http.Request, f fault) {
	resp, err := p.upstream(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	forwardHead(w, resp)
	if resp.StatusCode/100 != 2 || resp.ContentLength <= 0 {
		n, _ := io.Copy(w, resp.Body)
		p.getBytes.Add(n)
		return
	}
	n, _ := io.CopyN(w, resp.Body, p.inj.cutAt(resp.ContentLength))
	p.getBytes.Add(n)
	http.NewResponseController(w).Flush()
	switch f {
	case faultReset:
		p.inj.resets.Add(1)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // Close sends RST, not FIN
		}
		conn.Close()
	case faultStall:
		p.inj.stalls.Add(1)
		p.inj.mu.Lock()
		d := p.inj.faults.StallFor
		p.inj.mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-time.After(d):
		}
	case faultTruncate:
		p.inj.truncated.Add(1)
	}
	// Returning short of Content-Length makes the server close the
	// connection: the client sees the body end early.
}

// replaceMidRead sends half of the object's body, has repl upload the new
// version, then sends the rest of the old body.
func (p *Proxy) replaceMidRead(w http.ResponseWriter, r *http.Request, repl *replacement) {
	resp, err := p.upstream(r)
	if err != nil {
		repl.done <- err
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	old, err := io.ReadAll(resp.Body)
	if err != nil {
		repl.done <- fmt.Errorf("read the old body: %w", err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	forwardHead(w, resp)
	half := int64(len(old) / 2)
	n, _ := io.Copy(w, bytes.NewReader(old[:half]))
	http.NewResponseController(w).Flush()
	err = repl.upload(context.WithoutCancel(r.Context()))
	if err == nil {
		p.inj.replaced.Add(1)
	}
	m, _ := io.Copy(w, bytes.NewReader(old[half:]))
	p.getBytes.Add(n + m)
	repl.done <- err
}
