package index

import (
	"context"
	"log/slog"
	"strings"
	"sync"
)

// maxWarned bounds the warnings a warnOnce remembers; past it, new ones
// are still logged every time rather than memory growing without end.
const maxWarned = 10000

// warnOnce is a slog.Handler that passes a warning through the first time
// it is seen (same message and attributes) and downgrades repeats to
// debug: a skipped key is warned about once per daemon run, not at every
// re-listing of its folder.
type warnOnce struct {
	slog.Handler
	mu     *sync.Mutex
	seen   map[string]bool // shared by the handlers derived with With
	prefix string          // the attributes and groups added with With
}

func newWarnOnce(log *slog.Logger) *slog.Logger {
	return slog.New(&warnOnce{Handler: log.Handler(), mu: new(sync.Mutex), seen: map[string]bool{}})
}

func (w *warnOnce) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn && w.repeat(r) {
		if !w.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r = r.Clone()
		r.Level = slog.LevelDebug
	}
	return w.Handler.Handle(ctx, r)
}

// repeat reports whether r was warned about before, and remembers it.
func (w *warnOnce) repeat(r slog.Record) bool {
	var b strings.Builder
	b.WriteString(w.prefix + "\x00" + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString("\x00" + a.String())
		return true
	})
	key := b.String()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen[key] {
		return true
	}
	if len(w.seen) < maxWarned {
		w.seen[key] = true
	}
	return false
}

func (w *warnOnce) WithAttrs(as []slog.Attr) slog.Handler {
	prefix := w.prefix
	for _, a := range as {
		prefix += "\x00" + a.String()
	}
	return &warnOnce{Handler: w.Handler.WithAttrs(as), mu: w.mu, seen: w.seen, prefix: prefix}
}

func (w *warnOnce) WithGroup(name string) slog.Handler {
	return &warnOnce{Handler: w.Handler.WithGroup(name), mu: w.mu, seen: w.seen, prefix: w.prefix + "\x00[" + name + "]"}
}
