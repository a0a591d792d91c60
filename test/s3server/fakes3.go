package s3server

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fake is an in-process S3 server over buckets of stored objects (keys
// that a real server with a file backend cannot store: "..", "//", names
// over 255 bytes, control bytes, a key that is also a folder prefix) and
// of generated ones (CreateSynthBucket: 10^6–10^7 keys whose names and
// bytes are computed on the fly, for the scale figures).
//
// It answers the read calls s3cachefs, rclone and the AWS CLI make,
// path-style, as S3 does: ListObjectsV2 (prefix, delimiter, max-keys,
// start-after, continuation tokens, encoding-type=url), ListObjects v1
// (marker), GetObject (Range, If-Match), HeadObject, HeadBucket and
// GetBucketLocation, with S3's XML error bodies. A page of a listing costs
// O(page · log keys), never O(keys). It does not check signatures, and
// objects and buckets are created through its methods, not over HTTP.
// Every method may be called concurrently with requests.
type Fake struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string // what clients should sign with; never checked
	SecretKey string
	Region    string

	srv      *httptest.Server // set once in NewFake
	requests atomic.Int64     // HTTP requests answered; numbers their request IDs

	mu      sync.RWMutex
	buckets map[string]*fakeBucket // guarded by mu, and so is every bucket's content
}

// fakeBucket is one bucket's objects: the generated ones of gen, overlaid
// by the stored ones (a stored key hides a generated key of the same name)
// minus the generated keys deleted.
type fakeBucket struct {
	gen      genSets                // never modified
	objects  map[string]*fakeObject // stored; values are never modified, only replaced
	sorted   []string               // the stored keys in order
	deleted  map[string]bool        // generated keys that Delete removed
	truncate map[string]bool        // keys whose next GET body is cut short
}

// fakeObject is one stored object version.
type fakeObject struct {
	data     []byte
	etag     string // hex MD5, as S3 gives a single-part upload
	modified time.Time
}

// entry is one object as listed and served, stored or generated.
type entry struct {
	key      string
	size     int64
	etag     string // unquoted
	modified time.Time
	data     []byte // a stored object's bytes; nil when generated
	gen      bool
}

// NewFake starts a Fake on 127.0.0.1 with no buckets. Close stops it.
func NewFake() *Fake {
	f := &Fake{
		AccessKey: "fake" + randomHex(8),
		SecretKey: randomHex(20),
		Region:    "us-east-1",
		buckets:   map[string]*fakeBucket{},
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	f.Endpoint = f.srv.URL
	return f
}

// StartFake is NewFake for tests: it is closed in t.Cleanup.
func StartFake(t testing.TB) *Fake {
	t.Helper()
	f := NewFake()
	t.Cleanup(f.Close)
	return f
}

// Close stops the server, waiting for requests in flight.
func (f *Fake) Close() { f.srv.Close() }

// Handler is the fake's HTTP handler, for serving requests in-process
// without a connection.
func (f *Fake) Handler() http.Handler { return http.HandlerFunc(f.serve) }

// Requests is the number of HTTP requests the fake has answered.
func (f *Fake) Requests() int64 { return f.requests.Load() }

// Server describes the fake as a Server, so that NewProxy can stand in
// front of it, Env hands its keys to a child process and Client reads
// from it. Server's upload helpers (CreateBucket, Put, PutMany) do not work
// against it: use the Fake's own methods.
func (f *Fake) Server() *Server {
	return &Server{Endpoint: f.Endpoint, AccessKey: f.AccessKey, SecretKey: f.SecretKey, Region: f.Region}
}

// CreateBucket creates an empty bucket (no-op if it exists).
func (f *Fake) CreateBucket(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.buckets[name] == nil {
		f.buckets[name] = newFakeBucket(nil)
	}
}

// CreateSynthBucket creates (or replaces) bucket name holding the
// generated objects of sets: see Set for their keys, SynthBytes for their
// bytes and SynthETag for their ETags. Put and Delete work on it as on
// any bucket. It fails when a set's name formats are not fixed-width or
// two sets' key ranges overlap.
func (f *Fake) CreateSynthBucket(name string, sets ...Set) error {
	gen, err := newGenSets(sets)
	if err != nil {
		return fmt.Errorf("synthetic bucket %s: %w", name, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buckets[name] = newFakeBucket(gen)
	return nil
}

func newFakeBucket(gen genSets) *fakeBucket {
	return &fakeBucket{gen: gen, objects: map[string]*fakeObject{}, deleted: map[string]bool{}, truncate: map[string]bool{}}
}

// RemoveBucket deletes a bucket and everything in it.
func (f *Fake) RemoveBucket(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.buckets, name)
}

// Put stores a copy of data under key, replacing any object there. The
// bucket must exist.
func (f *Fake) Put(bucket, key string, data []byte) {
	sum := md5.Sum(data)
	o := &fakeObject{data: slices.Clone(data), etag: hex.EncodeToString(sum[:]), modified: time.Now().UTC()}
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.bucketLocked(bucket)
	if _, had := b.objects[key]; !had {
		i, _ := slices.BinarySearch(b.sorted, key)
		b.sorted = slices.Insert(b.sorted, i, key)
	}
	b.objects[key] = o
}

// Delete removes key, stored or generated; a missing key is no error.
func (f *Fake) Delete(bucket, key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.bucketLocked(bucket)
	if _, had := b.objects[key]; had {
		delete(b.objects, key)
		i, _ := slices.BinarySearch(b.sorted, key)
		b.sorted = slices.Delete(b.sorted, i, i+1)
	}
	if _, ok := b.gen.lookup(key); ok {
		b.deleted[key] = true
	}
}

// Truncate makes the next GetObject of key send half the body it
// announced, then close the connection.
func (f *Fake) Truncate(bucket, key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bucketLocked(bucket).truncate[key] = true
}

func (f *Fake) bucketLocked(name string) *fakeBucket {
	b := f.buckets[name]
	if b == nil {
		panic(fmt.Sprintf("fakes3: bucket %q does not exist", name))
	}
	return b
}

// lookup finds key, stored first. The caller holds f.mu.
func (b *fakeBucket) lookup(key string) (entry, bool) {
	if o := b.objects[key]; o != nil {
		return storedEntry(key, o), true
	}
	if b.deleted[key] {
		return entry{}, false
	}
	if s, ok := b.gen.lookup(key); ok {
		return genEntry(s, key), true
	}
	return entry{}, false
}

func storedEntry(key string, o *fakeObject) entry {
	return entry{key: key, size: int64(len(o.data)), etag: o.etag, modified: o.modified, data: o.data}
}

func genEntry(s Set, key string) entry {
	return entry{key: key, size: s.Size, etag: SynthETag(key, s.Size), modified: SynthModified, gen: true}
}

// cursor walks a bucket's keys in order, stored and generated merged. It
// is used under f.mu.
type cursor struct {
	b  *fakeBucket
	si int    // next index in b.sorted
	gp genPos // next generated key
}

// seek is a cursor at the first key >= from.
func (b *fakeBucket) seek(from string) *cursor {
	i, _ := slices.BinarySearch(b.sorted, from)
	return &cursor{b: b, si: i, gp: b.gen.seek(from)}
}

// next returns the key under the cursor and moves past it; false at the
// end.
func (c *cursor) next() (entry, bool) {
	for {
		set, gk, gok := c.b.gen.at(c.gp)
		sok := c.si < len(c.b.sorted)
		switch {
		case !gok && !sok:
			return entry{}, false
		case sok && (!gok || c.b.sorted[c.si] <= gk):
			k := c.b.sorted[c.si]
			if gok && k == gk { // the stored object hides the generated one
				c.gp = c.b.gen.advance(c.gp)
			}
			c.si++
			return storedEntry(k, c.b.objects[k]), true
		default:
			c.gp = c.b.gen.advance(c.gp)
			if !c.b.deleted[gk] {
				return genEntry(set, gk), true
			}
		}
	}
}

// serve routes one path-style request: /BUCKET[?query] or /BUCKET/KEY.
func (f *Fake) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-amz-request-id", strconv.FormatInt(f.requests.Add(1), 10))
	// The escaped path is split by hand: keys may hold "//", ".." and
	// "%2F", which any path cleaning would change.
	bucket, escKey, hasKey := strings.Cut(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	key, err := url.PathUnescape(escKey)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, "InvalidURI", "Couldn't parse the specified URI.")
		return
	}
	if !hasKey || key == "" {
		f.serveBucket(w, r, bucket)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeError(w, r, http.StatusNotImplemented, "NotImplemented", "The fake serves reads only.")
		return
	}
	f.serveObject(w, r, bucket, key)
}

// serveBucket answers HeadBucket, GetBucketLocation, ListObjectsV2 and
// ListObjects. The page is built under the read lock, so it sees one
// state of the bucket.
func (f *Fake) serveBucket(w http.ResponseWriter, r *http.Request, bucket string) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b := f.buckets[bucket]
	q := r.URL.Query()
	switch {
	case b == nil:
		writeError(w, r, http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
	case r.Method == http.MethodHead:
		w.WriteHeader(http.StatusOK)
	case r.Method != http.MethodGet:
		writeError(w, r, http.StatusNotImplemented, "NotImplemented", "The fake serves reads only.")
	case q.Get("list-type") == "2":
		listV2(w, r, bucket, b)
	case q.Has("location"):
		f.location(w)
	case onlyListV1Params(q):
		listV1(w, r, bucket, b)
	default:
		writeError(w, r, http.StatusNotImplemented, "NotImplemented", "The fake serves ListObjects (v1, v2), GetBucketLocation, HeadBucket and object reads only.")
	}
}

// location answers GetBucketLocation: empty for us-east-1, as S3 does.
func (f *Fake) location(w http.ResponseWriter) {
	region := f.Region
	if region == "us-east-1" {
		region = ""
	}
	body, _ := xml.Marshal(struct {
		XMLName xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ LocationConstraint"`
		Region  string   `xml:",chardata"`
	}{Region: region})
	w.Header().Set("Content-Type", "application/xml")
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(body)
}

// serveObject answers GetObject and HeadObject.
func (f *Fake) serveObject(w http.ResponseWriter, r *http.Request, bucket, key string) {
	f.mu.Lock()
	b := f.buckets[bucket]
	var o entry
	var found, cut bool
	if b != nil {
		o, found = b.lookup(key)
		if cut = b.truncate[key] && r.Method == http.MethodGet; cut {
			delete(b.truncate, key)
		}
	}
	f.mu.Unlock()
	switch {
	case b == nil:
		writeError(w, r, http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
		return
	case !found:
		writeError(w, r, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	quoted := `"` + o.etag + `"`
	if im := r.Header.Get("If-Match"); im != "" && !etagListHas(im, quoted) {
		writeError(w, r, http.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
		return
	}
	first, last, ranged, ok := parseRange(r.Header.Get("Range"), o.size)
	if !ok {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", o.size))
		writeError(w, r, http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "The requested range is not satisfiable")
		return
	}
	n := last - first + 1
	h := w.Header()
	h.Set("ETag", quoted)
	h.Set("Last-Modified", o.modified.Format(http.TimeFormat))
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	status := http.StatusOK
	if ranged {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, o.size))
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if cut {
		// Fewer bytes than Content-Length: net/http then closes the
		// connection, and the client sees the body end early.
		n /= 2
	}
	writeBody(w, o, first, n)
}

// writeBody writes n bytes of o from off: a stored object's slice, or a
// generated one's bytes made a chunk at a time.
func writeBody(w http.ResponseWriter, o entry, off, n int64) {
	if !o.gen {
		_, _ = w.Write(o.data[off : off+n])
		return
	}
	seed := keySeed(o.key)
	buf := make([]byte, min(n, 64<<10))
	for n > 0 {
		p := buf[:min(n, int64(len(buf)))]
		synthFill(seed, off, p)
		if _, err := w.Write(p); err != nil {
			return
		}
		off, n = off+int64(len(p)), n-int64(len(p))
	}
}

// etagListHas reports whether an If-Match value ("*" or a comma-separated
// list of quoted ETags) matches quoted.
func etagListHas(header, quoted string) bool {
	for e := range strings.SplitSeq(header, ",") {
		if e = strings.TrimSpace(e); e == "*" || e == quoted {
			return true
		}
	}
	return false
}

// parseRange reads a Range header as S3 does: one "bytes=" range, an end
// past the object clamped to it. A header it cannot parse is ignored (the
// whole object, ranged false); ok is false when the range lies wholly
// past the end (416).
func parseRange(header string, size int64) (first, last int64, ranged, ok bool) {
	whole := func() (int64, int64, bool, bool) { return 0, size - 1, false, true }
	spec, found := strings.CutPrefix(header, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return whole()
	}
	a, z, found := strings.Cut(spec, "-")
	if !found {
		return whole()
	}
	if a == "" { // the last z bytes
		n, err := strconv.ParseInt(z, 10, 64)
		if err != nil || n <= 0 {
			return whole()
		}
		if size == 0 {
			return 0, 0, true, false
		}
		return max(size-n, 0), size - 1, true, true
	}
	first, err := strconv.ParseInt(a, 10, 64)
	if err != nil || first < 0 {
		return whole()
	}
	last = size - 1
	if z != "" {
		if last, err = strconv.ParseInt(z, 10, 64); err != nil || last < first {
			return whole()
		}
		last = min(last, size-1)
	}
	if first >= size {
		return 0, 0, true, false
	}
	return first, last, true, true
}

// writeError sends S3's XML error body (none for HEAD, as S3 does).
func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	body, _ := xml.Marshal(struct {
		XMLName   xml.Name `xml:"Error"`
		Code      string
		Message   string
		Resource  string
		RequestID string `xml:"RequestId"`
	}{Code: code, Message: msg, Resource: r.URL.Path, RequestID: w.Header().Get("x-amz-request-id")})
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(body)
}

// encodeToken and decodeToken make the opaque continuation token: the kind
// of the last item of the page ("k" key, "p" common prefix) and the item.
func encodeToken(kind, item string) string {
	return base64.URLEncoding.EncodeToString([]byte(kind + item))
}

func decodeToken(tok string) (kind, item string, ok bool) {
	b, err := base64.URLEncoding.DecodeString(tok)
	if err != nil || len(b) == 0 || (b[0] != 'k' && b[0] != 'p') {
		return "", "", false
	}
	return string(b[:1]), string(b[1:]), true
}
