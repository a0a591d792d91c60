package main

import (
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"s3cachefs/cmd/s3cachefs/api"
)

// Requests the control socket must refuse before they reach the daemon:
// the control here has no daemon, so any that got through would panic.
func TestControlRefusesMalformedRequests(t *testing.T) {
	h := (&control{log: slog.New(slog.DiscardHandler)}).handler()
	huge := `{"paths":["` + strings.Repeat("a", maxRequestBody) + `"]}`
	cases := []struct {
		method, path, body string
		want               int
	}{
		{"DELETE", "/status", "", http.StatusMethodNotAllowed},
		{"GET", "/shutdown", "", http.StatusMethodNotAllowed},
		{"PUT", "/prefetch", `{"paths":["a"]}`, http.StatusMethodNotAllowed},
		{"POST", "/jobs", "", http.StatusMethodNotAllowed},
		{"DELETE", "/jobs/20250101T000000.000-1", "", http.StatusMethodNotAllowed},
		{"GET", "/nope", "", http.StatusNotFound},
		{"GET", "/", "", http.StatusNotFound},
		{"POST", "/jobs/x/explode", "", http.StatusNotFound},
		{"GET", "/jobs/..", "", http.StatusBadRequest},
		{"GET", "/jobs/" + strings.Repeat("9", 65), "", http.StatusBadRequest},
		{"POST", "/jobs/a%20b/cancel", "", http.StatusBadRequest},
		{"GET", "/jobs/a%00b", "", http.StatusBadRequest},
		{"POST", "/jobs/a%2Fb/cancel", "", http.StatusBadRequest},
		{"GET", "/jobs/%2e%2e", "", http.StatusBadRequest},
		{"GET", "/jobs/", "", http.StatusNotFound},
		{"GET", "/status/../status", "", http.StatusNotFound},
		{"GET", "//status", "", http.StatusNotFound},
		{"POST", "/prefetch", "", http.StatusBadRequest},
		{"POST", "/prefetch", "{", http.StatusBadRequest},
		{"POST", "/prefetch", `{"paths":"train"}`, http.StatusBadRequest},
		{"POST", "/prefetch", `{"paths":[]}`, http.StatusBadRequest},
		{"POST", "/prefetch", `{"pathz":["train"]}`, http.StatusBadRequest},
		{"POST", "/prefetch", `{"paths":["train"]} {"paths":["dev"]}`, http.StatusBadRequest},
		{"POST", "/prefetch", `{"paths":["train"]}]`, http.StatusBadRequest},
		{"POST", "/verify", `{"paths":["../etc"]}`, http.StatusBadRequest},
		{"POST", "/evict", `{"paths":["/etc"]}`, http.StatusBadRequest},
		{"POST", "/unpin", `{"paths":["a//b"]}`, http.StatusBadRequest},
		{"POST", "/prefetch", `{"paths":["a/./b"]}`, http.StatusBadRequest},
		{"POST", "/prefetch", `{"paths":["a\u0000b"]}`, http.StatusBadRequest},
		{"POST", "/prefetch", `{"paths":["."]}`, http.StatusBadRequest},
		{"POST", "/prefetch", huge, http.StatusRequestEntityTooLarge},
		{"POST", "/prefetch", `{"paths":["train"]}` + strings.Repeat(" ", maxRequestBody), http.StatusRequestEntityTooLarge},
	}
	for _, tc := range cases {
		name := tc.method + " " + tc.path + " " + tc.body
		if len(name) > 80 {
			name = name[:80]
		}
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, "http://s3cachefs"+tc.path, strings.NewReader(tc.body)))
			if rec.Code != tc.want {
				t.Errorf("status %d, want %d: %s", rec.Code, tc.want, rec.Body)
			}
			var e api.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Errorf("body is not an api.Error: %q", rec.Body)
			}
		})
	}
}

// TestDecodePathsAccepts: what the commands send passes unchanged.
func TestDecodePathsAccepts(t *testing.T) {
	for _, body := range []string{
		`{"paths":[""]}`, `{"paths":["train","dev"]}`, "{\"paths\":[\"a/b c/ü\"],\"deep\":true}\n",
		`  {"paths":[".hidden/x"]}  `,
	} {
		req, _, err := decodePaths(strings.NewReader(body))
		if err != nil || len(req.Paths) == 0 {
			t.Errorf("decodePaths(%q) = %+v, %v", body, req, err)
		}
	}
}

// FuzzDecodePaths: whatever arrives on the control socket, a request is
// either refused with a 4xx or holds only clean paths inside the mount.
func FuzzDecodePaths(f *testing.F) {
	for _, s := range []string{`{"paths":["train"]}`, `{"paths":["../x"]}`, `{"paths":[""],"deep":true}`, `{`, `[]`, `{"paths":["a"]}x`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req, code, err := decodePaths(strings.NewReader(body))
		if err != nil {
			if code < 400 || code > 499 {
				t.Fatalf("refused with status %d", code)
			}
			return
		}
		if len(req.Paths) == 0 {
			t.Fatal("accepted no paths")
		}
		for _, p := range req.Paths {
			for seg := range strings.SplitSeq(p, "/") {
				if p != "" && (seg == "" || seg == "." || seg == "..") {
					t.Fatalf("accepted path %q", p)
				}
			}
			if strings.ContainsRune(p, 0) {
				t.Fatalf("accepted path %q with NUL", p)
			}
		}
	})
}

// FuzzParseMinFree: --min-free is a size or a percentage below 100; an
// error names the flag.
func FuzzParseMinFree(f *testing.F) {
	for _, s := range []string{"5%", "10GiB", "99.9%", "100%", "-1%", "NaN%", "1e400%", " 5 %", "%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseMinFree(s)
		if err != nil {
			if !strings.Contains(err.Error(), "--min-free") {
				t.Fatalf("error without the flag: %v", err)
			}
			return
		}
		if m.Bytes < 0 || m.Percent < 0 || m.Percent >= 100 || math.IsNaN(m.Percent) || (m.Bytes > 0 && m.Percent != 0) {
			t.Fatalf("parseMinFree(%q) = %+v", s, m)
		}
	})
}
