package blockcache

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"s3cachefs/blockcache/s3store/memstore"
)

// bodyFaults breaks GetRange bodies of chosen keys: the read after every
// `every` successful reads of a body fails (memstore hands out one block
// per read here), and counts the GETs per key.
type bodyFaults struct {
	mu    sync.Mutex
	every map[string]int // key → reads allowed per body; 0 = all fail
	reads map[string]int // key → reads of the current body
	gets  map[string]int
}

func breakBodies(src *memstore.Store, every map[string]int) *bodyFaults {
	b := &bodyFaults{every: every, reads: map[string]int{}, gets: map[string]int{}}
	src.SetFault(func(op, key string) error {
		b.mu.Lock()
		defer b.mu.Unlock()
		n, broken := b.every[key]
		switch {
		case op == memstore.OpGet:
			b.gets[key]++
			b.reads[key] = 0
		case op == memstore.OpRead && broken:
			if b.reads[key] >= n {
				return errors.New("injected: connection reset by peer")
			}
			b.reads[key]++
		}
		return nil
	})
	return b
}

func (b *bodyFaults) getsOf(key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gets[key]
}

func (b *bodyFaults) heal(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.every, key)
}

// TestBrokenBodiesResume: bodies that break after one block each still
// fill the part, each GET asking only for what is missing, so no block is
// downloaded twice; progress does not use up the retry budget.
func TestBrokenBodiesResume(t *testing.T) {
	f := newFixture(t, Options{ReadAhead: -1})
	data := randBytes(31, testPart) // 4 blocks, one part
	obj := f.src.Put("r", data)
	faults := breakBodies(f.src, map[string]int{"r": 1})
	if got := readAll(t, f.openHandle(obj)); !bytes.Equal(got, data) {
		t.Fatal("bytes differ after broken bodies")
	}
	if n := faults.getsOf("r"); n != testPart/testBlock {
		t.Errorf("%d GETs, want one per block (%d): each resumes where the last broke", n, testPart/testBlock)
	}
	if s := f.c.Stats(); s.BytesFromS3 != int64(len(data)) {
		t.Errorf("BytesFromS3 = %d, want %d: a block was downloaded twice", s.BytesFromS3, len(data))
	}
}

// TestBrokenBodiesBudget: a body that always breaks before its first block
// fails the read after Options.BodyAttempts GETs, only for that object;
// the object reads again once the fault is gone.
func TestBrokenBodiesBudget(t *testing.T) {
	const attempts = 4
	f := newFixture(t, Options{ReadAhead: -1, BodyAttempts: attempts})
	bad, good := randBytes(32, testPart), randBytes(33, testPart)
	badObj, goodObj := f.src.Put("bad", bad), f.src.Put("good", good)
	faults := breakBodies(f.src, map[string]int{"bad": 0})
	h := f.openHandle(badObj)
	_, err := h.ReadAt(context.Background(), buf(10), 0)
	var body *bodyError
	if !errors.As(err, &body) {
		t.Fatalf("read of an object whose bodies always break: %v, want a body error", err)
	}
	if n := faults.getsOf("bad"); n != attempts {
		t.Errorf("%d GETs before giving up, want BodyAttempts = %d", n, attempts)
	}
	if got := readAll(t, f.openHandle(goodObj)); !bytes.Equal(got, good) {
		t.Fatal("another object's bytes differ while one is failing")
	}
	faults.heal("bad")
	if got := readAll(t, h); !bytes.Equal(got, bad) {
		t.Fatal("bytes differ once the fault is gone")
	}
	if s := f.c.Stats(); s.FetchErrors != 1 {
		t.Errorf("FetchErrors = %d, want 1", s.FetchErrors)
	}
}

// TestFailedRequestIsFinal: the Source retried a request that fails
// before its body; the cache does not multiply that budget.
func TestFailedRequestIsFinal(t *testing.T) {
	f := newFixture(t, Options{ReadAhead: -1})
	obj := f.src.Put("e", randBytes(34, testPart))
	injected := errors.New("injected: 503 after every retry")
	var mu sync.Mutex
	gets := 0
	f.src.SetFault(func(op, key string) error {
		if op != memstore.OpGet {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		gets++
		return injected
	})
	if _, err := f.openHandle(obj).ReadAt(context.Background(), buf(10), 0); !errors.Is(err, injected) {
		t.Fatalf("read: %v, want the injected error", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if gets != 1 {
		t.Errorf("%d GETs for one failed request, want 1", gets)
	}
}

// TestUncachedReadRetriesBrokenBodies: with no room to cache, a read goes
// straight to S3, and a body that breaks is asked for again within the
// same budget as a fetch.
func TestUncachedReadRetriesBrokenBodies(t *testing.T) {
	const attempts = 3
	f := newFixture(t, Options{ReadAhead: -1, MaxBytes: 1, BodyAttempts: attempts})
	data := randBytes(34, testPart)
	obj := f.src.Put("u", data)
	faults := breakBodies(f.src, map[string]int{"u": 0})
	h := f.openHandle(obj)
	p := make([]byte, len(data))
	if _, err := h.ReadAt(context.Background(), p, 0); err == nil {
		t.Fatal("uncached read of an object whose bodies always break: no error")
	}
	if n := faults.getsOf("u"); n != attempts {
		t.Errorf("%d GETs before giving up, want BodyAttempts = %d", n, attempts)
	}
	faults.heal("u")
	n, err := h.ReadAt(context.Background(), p, 0)
	if err != nil || !bytes.Equal(p[:n], data) {
		t.Fatalf("uncached read once healed: %d bytes, %v; equal %v", n, err, bytes.Equal(p[:n], data))
	}
	if s := f.c.Stats(); s.Uncached == 0 || s.BytesFromS3 != 0 {
		t.Errorf("stats %+v: want uncached reads and nothing cached", s)
	}
}
