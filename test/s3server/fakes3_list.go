package s3server

import (
	"encoding/xml"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// listResult is S3's ListObjectsV2 answer, fields in S3's order.
type listResult struct {
	XMLName               xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListBucketResult"`
	Name                  string
	Prefix                string
	Delimiter             string `xml:",omitempty"`
	MaxKeys               int
	EncodingType          string `xml:",omitempty"`
	KeyCount              int
	IsTruncated           bool
	ContinuationToken     string `xml:",omitempty"`
	NextContinuationToken string `xml:",omitempty"`
	StartAfter            string `xml:",omitempty"`
	Contents              []listEntry
	CommonPrefixes        []commonPrefix
}

// listV1Result is S3's ListObjects (version 1) answer.
type listV1Result struct {
	XMLName        xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListBucketResult"`
	Name           string
	Prefix         string
	Marker         string
	NextMarker     string `xml:",omitempty"`
	MaxKeys        int
	Delimiter      string `xml:",omitempty"`
	EncodingType   string `xml:",omitempty"`
	IsTruncated    bool
	Contents       []listEntry
	CommonPrefixes []commonPrefix
}

type listEntry struct {
	Key          string
	LastModified string
	ETag         string
	Size         int64
	StorageClass string
}

type commonPrefix struct{ Prefix string }

// maxListKeys is S3's page size limit and default.
const maxListKeys = 1000

// pageQuery is what one page of a listing asks for.
type pageQuery struct {
	prefix, delim string
	marker        string // list what sorts after it ("" from the start)
	maxKeys       int
}

// page is one page of a listing.
type page struct {
	contents  []entry
	prefixes  []string
	truncated bool
	lastKind  string // "k" key, "p" common prefix: the page's last item
	last      string
}

// listPage builds one page of b's keys. It seeks rather than walks: past
// each common prefix it jumps to the first key after the prefix, so a page
// costs O(page) seeks whatever the bucket holds. Common prefixes count
// towards maxKeys, and one is listed only if it sorts after the marker,
// as in S3, so that a marker naming a prefix resumes after all its keys.
// The caller holds f.mu.
func listPage(b *fakeBucket, q pageQuery) page {
	from := q.prefix
	if m := q.marker + "\x00"; q.marker != "" && m > from {
		from = m
	}
	var pg page
	c := b.seek(from)
	for {
		e, ok := c.next()
		if !ok || !strings.HasPrefix(e.key, q.prefix) {
			// Keys after the first one outside prefix are outside too.
			return pg
		}
		kind, item := "k", e.key
		if i := strings.Index(e.key[len(q.prefix):], q.delim); q.delim != "" && i >= 0 {
			kind, item = "p", e.key[:len(q.prefix)+i+len(q.delim)]
		}
		if kind == "p" && item <= q.marker { // listed on an earlier page
			if c = b.seekPast(item); c == nil {
				return pg
			}
			continue
		}
		if len(pg.contents)+len(pg.prefixes) == q.maxKeys {
			pg.truncated = q.maxKeys > 0
			return pg
		}
		pg.lastKind, pg.last = kind, item
		if kind == "k" {
			pg.contents = append(pg.contents, e)
			continue
		}
		pg.prefixes = append(pg.prefixes, item)
		if c = b.seekPast(item); c == nil {
			return pg
		}
	}
}

// seekPast is a cursor at the first key that does not start with p; nil
// when no key can follow them.
func (b *fakeBucket) seekPast(p string) *cursor {
	end, ok := prefixEnd(p)
	if !ok {
		return nil
	}
	return b.seek(end)
}

// prefixEnd is the least string greater than every string starting with
// p; false when there is none (p is all 0xff bytes).
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// parseMaxKeys reads max-keys (default and cap 1000); a bad one is
// answered with S3's InvalidArgument, and ok is false.
func parseMaxKeys(w http.ResponseWriter, r *http.Request, q url.Values) (n int, ok bool) {
	v := q.Get("max-keys")
	if v == "" {
		return maxListKeys, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		writeError(w, r, http.StatusBadRequest, "InvalidArgument", "Provided max-keys not an integer or within integer range")
		return 0, false
	}
	return min(n, maxListKeys), true
}

// encoder is identity, or S3's encoding-type=url.
func encoder(q url.Values) (func(string) string, string) {
	if q.Get("encoding-type") == "url" {
		return s3URLEncode, "url"
	}
	return func(s string) string { return s }, ""
}

func listEntries(es []entry, encode func(string) string) []listEntry {
	out := make([]listEntry, len(es))
	for i, e := range es {
		out[i] = listEntry{
			Key: encode(e.key), LastModified: e.modified.Format("2006-01-02T15:04:05.000Z"),
			ETag: `"` + e.etag + `"`, Size: e.size, StorageClass: "STANDARD",
		}
	}
	return out
}

func commonPrefixes(ps []string, encode func(string) string) []commonPrefix {
	out := make([]commonPrefix, len(ps))
	for i, p := range ps {
		out[i] = commonPrefix{encode(p)}
	}
	return out
}

// listV2 answers ListObjectsV2. The continuation token names the page's
// last item; each common prefix appears once across pages, as in S3.
func listV2(w http.ResponseWriter, r *http.Request, bucket string, b *fakeBucket) {
	q := r.URL.Query()
	maxKeys, ok := parseMaxKeys(w, r, q)
	if !ok {
		return
	}
	pq := pageQuery{prefix: q.Get("prefix"), delim: q.Get("delimiter"), marker: q.Get("start-after"), maxKeys: maxKeys}
	if tok := q.Get("continuation-token"); tok != "" {
		_, item, ok := decodeToken(tok)
		if !ok {
			writeError(w, r, http.StatusBadRequest, "InvalidArgument", "The continuation token provided is incorrect")
			return
		}
		pq.marker = item
	}
	pg := listPage(b, pq)
	encode, encType := encoder(q)
	res := listResult{
		Name: bucket, Prefix: encode(pq.prefix), Delimiter: encode(pq.delim), MaxKeys: maxKeys,
		EncodingType: encType, KeyCount: len(pg.contents) + len(pg.prefixes), IsTruncated: pg.truncated,
		ContinuationToken: q.Get("continuation-token"), StartAfter: encode(q.Get("start-after")),
		Contents: listEntries(pg.contents, encode), CommonPrefixes: commonPrefixes(pg.prefixes, encode),
	}
	if pg.truncated {
		res.NextContinuationToken = encodeToken(pg.lastKind, pg.last)
	}
	writeXML(w, r, res)
}

// v1Params are the query parameters of ListObjects (version 1).
var v1Params = map[string]bool{"prefix": true, "delimiter": true, "marker": true, "max-keys": true, "encoding-type": true}

// onlyListV1Params reports whether q is a ListObjects v1 request, not a
// bucket sub-resource (?versioning, ?acl...).
func onlyListV1Params(q url.Values) bool {
	for k := range q {
		if !v1Params[k] {
			return false
		}
	}
	return true
}

// listV1 answers ListObjects (version 1): the marker resumes after a key
// or a common prefix; NextMarker is sent when a delimiter is, as in S3.
func listV1(w http.ResponseWriter, r *http.Request, bucket string, b *fakeBucket) {
	q := r.URL.Query()
	maxKeys, ok := parseMaxKeys(w, r, q)
	if !ok {
		return
	}
	pq := pageQuery{prefix: q.Get("prefix"), delim: q.Get("delimiter"), marker: q.Get("marker"), maxKeys: maxKeys}
	pg := listPage(b, pq)
	encode, encType := encoder(q)
	res := listV1Result{
		Name: bucket, Prefix: encode(pq.prefix), Marker: encode(pq.marker), MaxKeys: maxKeys,
		Delimiter: encode(pq.delim), EncodingType: encType, IsTruncated: pg.truncated,
		Contents: listEntries(pg.contents, encode), CommonPrefixes: commonPrefixes(pg.prefixes, encode),
	}
	if pg.truncated && pq.delim != "" {
		res.NextMarker = encode(pg.last)
	}
	writeXML(w, r, res)
}

func writeXML(w http.ResponseWriter, r *http.Request, v any) {
	body, err := xml.Marshal(v)
	if err != nil {
		writeError(w, r, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(body)
}

// s3URLEncode encodes a name as S3 does for encoding-type=url: form
// encoding (space as "+", every byte outside the unreserved set as %XX),
// with "/" left as is.
func s3URLEncode(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "%2F", "/")
}
