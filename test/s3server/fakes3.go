package s3server

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"maps"
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

// Fake is an in-process S3 server over a map of keys to bytes, for keys
// that a real server with a file backend cannot store ("..", "//", names
// over 255 bytes, control bytes, a key that is also a folder prefix).
//
// It answers the read calls s3cachefs makes, path-style, as S3 does:
// ListObjectsV2 (prefix, delimiter, max-keys, start-after, continuation
// tokens, encoding-type=url), GetObject (Range, If-Match), HeadObject and
// HeadBucket, with S3's XML error bodies. It does not check signatures, and
// objects and buckets are created through its methods, not over HTTP.
// Every method may be called concurrently with requests.
type Fake struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string // what clients should sign with; never checked
	SecretKey string
	Region    string

	requests atomic.Int64 // HTTP requests answered; numbers their request IDs

	mu      sync.Mutex
	buckets map[string]*fakeBucket // guarded by mu
}

// fakeBucket is one bucket's objects.
type fakeBucket struct {
	objects  map[string]*fakeObject // values are never modified, only replaced
	sorted   []string               // the keys in order; nil when stale
	truncate map[string]bool        // keys whose next GET body is cut short
}

// fakeObject is one stored object version.
type fakeObject struct {
	data     []byte
	etag     string // hex MD5, as S3 gives a single-part upload
	modified time.Time
}

// StartFake starts a Fake on 127.0.0.1 with no buckets; it is closed in
// t.Cleanup.
func StartFake(t testing.TB) *Fake {
	t.Helper()
	f := &Fake{
		AccessKey: "fake" + randomHex(8),
		SecretKey: randomHex(20),
		Region:    "us-east-1",
		buckets:   map[string]*fakeBucket{},
	}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	f.Endpoint = srv.URL
	return f
}

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
		f.buckets[name] = &fakeBucket{objects: map[string]*fakeObject{}, truncate: map[string]bool{}}
	}
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
		b.sorted = nil
	}
	b.objects[key] = o
}

// Delete removes key; a missing key is no error.
func (f *Fake) Delete(bucket, key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.bucketLocked(bucket)
	delete(b.objects, key)
	b.sorted = nil
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

// serve routes one path-style request: /BUCKET[?query] or /BUCKET/KEY.
func (f *Fake) serve(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	w.Header().Set("x-amz-request-id", strconv.FormatInt(f.requests.Load(), 10))
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

// serveBucket answers HeadBucket and ListObjectsV2.
func (f *Fake) serveBucket(w http.ResponseWriter, r *http.Request, bucket string) {
	f.mu.Lock()
	b := f.buckets[bucket]
	var keys []string
	var objs map[string]*fakeObject
	if b != nil {
		if b.sorted == nil {
			b.sorted = slices.Sorted(maps.Keys(b.objects))
		}
		// Put replaces the map's values, so the listing works on a
		// snapshot taken under the lock. sorted is never modified, only
		// replaced.
		keys, objs = b.sorted, maps.Clone(b.objects)
	}
	f.mu.Unlock()
	switch {
	case b == nil:
		writeError(w, r, http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
	case r.Method == http.MethodHead:
		w.WriteHeader(http.StatusOK)
	case r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "2":
		listV2(w, r, bucket, keys, objs)
	default:
		writeError(w, r, http.StatusNotImplemented, "NotImplemented", "The fake serves ListObjectsV2, HeadBucket and object reads only.")
	}
}

// serveObject answers GetObject and HeadObject.
func (f *Fake) serveObject(w http.ResponseWriter, r *http.Request, bucket, key string) {
	f.mu.Lock()
	b := f.buckets[bucket]
	var o *fakeObject
	var cut bool
	if b != nil {
		o = b.objects[key]
		if cut = b.truncate[key] && r.Method == http.MethodGet; cut {
			delete(b.truncate, key)
		}
	}
	f.mu.Unlock()
	switch {
	case b == nil:
		writeError(w, r, http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
		return
	case o == nil:
		writeError(w, r, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	quoted := `"` + o.etag + `"`
	if im := r.Header.Get("If-Match"); im != "" && !etagListHas(im, quoted) {
		writeError(w, r, http.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
		return
	}
	size := int64(len(o.data))
	first, last, ranged, ok := parseRange(r.Header.Get("Range"), size)
	if !ok {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		writeError(w, r, http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "The requested range is not satisfiable")
		return
	}
	h := w.Header()
	h.Set("ETag", quoted)
	h.Set("Last-Modified", o.modified.Format(http.TimeFormat))
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(last-first+1, 10))
	status := http.StatusOK
	if ranged {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, size))
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	body := o.data[first : last+1]
	if cut {
		// Fewer bytes than Content-Length: net/http then closes the
		// connection, and the client sees the body end early.
		body = body[:len(body)/2]
	}
	_, _ = w.Write(body)
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
