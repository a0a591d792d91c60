package blockcache

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"
)

// fetchLog records what Options.OnFetch was told.
type fetchLog struct {
	mu    sync.Mutex
	bytes []int64
	errs  []error
}

func (l *fetchLog) add(n int64, d time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d < 0 {
		err = errors.Join(err, errors.New("negative duration"))
	}
	l.bytes = append(l.bytes, n)
	l.errs = append(l.errs, err)
}

func TestOnFetchSeesEveryGet(t *testing.T) {
	var log fetchLog
	f := newFixture(t, Options{OnFetch: log.add})
	data := randBytes(21, 3*testPart+12345)
	obj := f.src.Put("o", data)
	if got := readAll(t, f.openHandle(obj)); !bytes.Equal(got, data) {
		t.Fatal("read differs from the source")
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if got, want := int64(len(log.bytes)), f.c.Stats().Fetches; got != want {
		t.Fatalf("OnFetch called %d times for %d fetches", got, want)
	}
	var total int64
	for i, n := range log.bytes {
		if log.errs[i] != nil {
			t.Errorf("fetch %d: unexpected error %v", i, log.errs[i])
		}
		total += n
	}
	if total != int64(len(data)) {
		t.Fatalf("OnFetch was told %d bytes in all, want %d", total, len(data))
	}
}

func TestOnFetchSeesFailures(t *testing.T) {
	var log fetchLog
	injected := errors.New("injected write")
	f := newFixture(t, Options{OnFetch: log.add, Fault: func(point, id string) error {
		if point == "write" {
			return injected
		}
		return nil
	}})
	obj := f.src.Put("o", randBytes(22, testPart))
	if _, err := f.openHandle(obj).ReadAt(t.Context(), buf(10), 0); !errors.Is(err, injected) {
		t.Fatalf("read: %v, want the injected error", err)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.errs) == 0 {
		t.Fatal("OnFetch not called for a failed fetch")
	}
	for i, err := range log.errs {
		if !errors.Is(err, injected) || log.bytes[i] != 0 {
			t.Errorf("call %d: %d bytes, err %v; want 0 bytes and the injected error", i, log.bytes[i], err)
		}
	}
}
