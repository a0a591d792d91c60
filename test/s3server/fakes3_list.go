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

// listV2 answers ListObjectsV2 over keys (sorted) and objs. Common
// prefixes count towards max-keys and each appears once across pages, as
// in S3.
func listV2(w http.ResponseWriter, r *http.Request, bucket string, keys []string, objs map[string]*fakeObject) {
	q := r.URL.Query()
	prefix, delim := q.Get("prefix"), q.Get("delimiter")
	maxKeys := maxListKeys
	if v := q.Get("max-keys"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, r, http.StatusBadRequest, "InvalidArgument", "Provided max-keys not an integer or within integer range")
			return
		}
		maxKeys = min(n, maxListKeys)
	}
	// Resume after the marker: start-after, or the continuation token,
	// which also says whether the marker was a common prefix whose keys
	// were all rolled up already.
	marker, skipUnder := q.Get("start-after"), ""
	if tok := q.Get("continuation-token"); tok != "" {
		kind, item, ok := decodeToken(tok)
		if !ok {
			writeError(w, r, http.StatusBadRequest, "InvalidArgument", "The continuation token provided is incorrect")
			return
		}
		marker = item
		if kind == "p" {
			skipUnder = item
		}
	}
	encode := func(s string) string { return s }
	res := listResult{Name: bucket, Delimiter: delim, MaxKeys: maxKeys, ContinuationToken: q.Get("continuation-token"), StartAfter: q.Get("start-after")}
	if q.Get("encoding-type") == "url" {
		res.EncodingType = "url"
		encode = s3URLEncode
	}
	res.Prefix, res.Delimiter, res.StartAfter = encode(prefix), encode(delim), encode(res.StartAfter)

	var lastKind, last string
	for _, k := range keys {
		if k <= marker || !strings.HasPrefix(k, prefix) || (skipUnder != "" && strings.HasPrefix(k, skipUnder)) {
			continue
		}
		kind, item := "k", k
		if i := strings.Index(k[len(prefix):], delim); delim != "" && i >= 0 {
			kind, item = "p", k[:len(prefix)+i+len(delim)]
			if lastKind == "p" && item == last {
				continue // rolled up into the prefix already on this page
			}
		}
		if res.KeyCount == maxKeys {
			res.IsTruncated = maxKeys > 0
			break
		}
		if kind == "p" {
			res.CommonPrefixes = append(res.CommonPrefixes, commonPrefix{encode(item)})
			skipUnder = item
		} else {
			o := objs[k]
			res.Contents = append(res.Contents, listEntry{
				Key: encode(k), LastModified: o.modified.Format("2006-01-02T15:04:05.000Z"),
				ETag: `"` + o.etag + `"`, Size: int64(len(o.data)), StorageClass: "STANDARD",
			})
		}
		lastKind, last = kind, item
		res.KeyCount++
	}
	if res.IsTruncated {
		res.NextContinuationToken = encodeToken(lastKind, last)
	}
	body, err := xml.Marshal(res)
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
