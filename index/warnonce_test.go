package index

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer for a logger used from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestCatalogWarnsOncePerSkippedKey: a folder listed again and again
// (every TTL) warns about each skipped key once; repeats go to debug.
func TestCatalogWarnsOncePerSkippedKey(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		t.Run(level.String(), func(t *testing.T) {
			var out syncBuffer
			log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: level}))
			fake := &fakeLister{levels: map[string]ListResult{"ds/": {Objects: []Object{
				{Key: "ds/ok", Size: 1, ETag: "o"},
				{Key: "ds/bad\x01name", Size: 1, ETag: "b"},
				{Key: "ds/also\x02bad", Size: 1, ETag: "c"},
			}}}}
			c := NewCatalog(openTest(t), fake, CatalogOptions{Prefix: "ds/", TTL: time.Second, Logger: log})
			for range 3 {
				if err := c.Refresh(context.Background(), ""); err != nil {
					t.Fatal(err)
				}
			}
			text := out.String()
			for _, key := range []string{`bad\x01name`, `also\x02bad`} {
				warns := 0
				debugs := 0
				for _, line := range strings.Split(text, "\n") {
					if !strings.Contains(line, key) {
						continue
					}
					switch {
					case strings.Contains(line, "level=WARN"):
						warns++
					case strings.Contains(line, "level=DEBUG"):
						debugs++
					}
				}
				wantDebugs := 0
				if level == slog.LevelDebug {
					wantDebugs = 2
				}
				if warns != 1 || debugs != wantDebugs {
					t.Errorf("%s after 3 listings: %d warnings, %d debug lines; want 1 and %d\n%s",
						key, warns, debugs, wantDebugs, text)
				}
			}
		})
	}
}

// TestWarnOnceKeepsLoggersApart: the same warning from loggers with
// different attributes is not a repeat; the same from one logger is.
func TestWarnOnceKeepsLoggersApart(t *testing.T) {
	var out syncBuffer
	log := newWarnOnce(slog.New(slog.NewTextHandler(&out, nil)))
	a, b := log.With("bucket", "a"), log.With("bucket", "b")
	for range 2 {
		a.Warn("skipping", "key", "k")
		b.Warn("skipping", "key", "k")
		log.WithGroup("g").Warn("skipping", "key", "k")
	}
	if n := strings.Count(out.String(), "level=WARN"); n != 3 {
		t.Errorf("%d warnings, want 3 (one per logger):\n%s", n, out.String())
	}
}
