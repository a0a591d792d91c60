package blockcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"s3cachefs/index"
)

// diskUsed sums the disk usage of the cache files under f.dir, as du does.
func (f *fixture) diskUsed() int64 {
	var n int64
	entries, _ := os.ReadDir(f.dir + "/objects")
	for _, d := range entries {
		files, _ := os.ReadDir(f.dir + "/objects/" + d.Name())
		for _, file := range files {
			info, err := file.Info()
			if err == nil {
				n += statBlocks(info) * 512
			}
		}
	}
	return n
}

// readClosed opens obj, reads it whole, checks it is want and closes it
// (so that it may be evicted).
func (f *fixture) readClosed(obj index.Object, want []byte) {
	f.t.Helper()
	h, err := f.c.Open(context.Background(), obj)
	if err != nil {
		f.t.Fatal(err)
	}
	defer h.Close()
	if got := readAll(f.t, h); !bytes.Equal(got, want) {
		f.t.Fatalf("%s: wrong bytes", obj.Key)
	}
}

func TestEvictionKeepsUnderTheLimit(t *testing.T) {
	const limit = 3 * testPart
	f := newFixture(t, Options{MaxBytes: limit})
	var objs []index.Object
	var data [][]byte
	for i := range 8 {
		b := randBytes(uint64(100+i), testPart-100)
		data = append(data, b)
		objs = append(objs, f.src.Put(fmt.Sprintf("o%d", i), b))
	}
	pinned := ObjectID("bucket", objs[0])
	if err := f.db.PutJob(index.Job{ID: "j", Paths: []string{"x"}, Created: time.Now(), State: index.JobRunning}); err != nil {
		t.Fatal(err)
	}
	if err := f.db.Pin("j", map[string]int64{objs[0].Key: 1}); err != nil {
		t.Fatal(err)
	}
	for i, o := range objs {
		f.readClosed(o, data[i])
		if used := f.c.Stats().UsedBytes; used > limit {
			t.Fatalf("after object %d the cache uses %d bytes, over its %d limit", i, used, limit)
		}
		if du := f.diskUsed(); du > limit {
			t.Fatalf("after object %d the cache files take %d bytes on disk, over %d", i, du, limit)
		}
	}
	if _, ok, _ := f.db.Record(pinned); !ok {
		t.Fatal("the pinned object was evicted")
	}
	if _, ok, _ := f.db.Record(ObjectID("bucket", objs[1])); ok {
		t.Fatal("the least recently used unpinned object is still cached")
	}
	if _, ok, _ := f.db.Record(ObjectID("bucket", objs[7])); !ok {
		t.Fatal("the most recent object was evicted")
	}
	if s := f.c.Stats(); s.Evictions == 0 || s.Full {
		t.Fatalf("stats %+v", s)
	}
}

func TestFullCacheServesFromS3(t *testing.T) {
	f := newFixture(t, Options{MaxBytes: testPart})
	a := f.src.Put("a", randBytes(200, testPart))
	bData := randBytes(201, 2*testPart)
	b := f.src.Put("b", bData)
	ha := f.openHandle(a) // open: cannot be evicted
	readAll(t, ha)
	hb := f.openHandle(b)
	if got := readAll(t, hb); !bytes.Equal(got, bData) {
		t.Fatal("bytes read past a full cache differ")
	}
	s := f.c.Stats()
	if !s.Full || s.Uncached == 0 || s.UsedBytes > testPart {
		t.Fatalf("stats with a full cache: %+v", s)
	}
	if rec, ok, _ := f.db.Record(ObjectID("bucket", b)); ok && rec.Present.Count() > 0 {
		t.Fatal("blocks recorded although the cache had no room")
	}
	// Once a is closed it can go, and b is cached again.
	ha.Close()
	if _, err := hb.ReadAt(context.Background(), buf(10), 0); err != nil {
		t.Fatal(err)
	}
	if rec, _, _ := f.db.Record(ObjectID("bucket", b)); rec.Present.Count() == 0 {
		t.Fatal("nothing cached after room was made")
	}
	if f.c.Stats().Full {
		t.Fatal("still full after room was made")
	}
}

func TestUsageSurvivesRestart(t *testing.T) {
	f := newFixture(t, Options{})
	o := f.src.Put("u", randBytes(300, testPart+7))
	readAll(t, f.openHandle(o))
	used := f.c.Stats().UsedBytes
	if want := int64(testPart + diskBlock); used != want {
		t.Fatalf("used %d, want %d", used, want)
	}
	f.close()
	f.open(Options{})
	if got := f.c.Stats().UsedBytes; got != used {
		t.Fatalf("used after restart %d, want %d", got, used)
	}
}

func TestForgetDropsGoneVersions(t *testing.T) {
	f := newFixture(t, Options{})
	o := f.src.Put("g", randBytes(400, testPart))
	h := f.openHandle(o)
	readAll(t, h)
	h.Close()
	f.c.Forget([]index.Object{o})
	if _, ok, _ := f.db.Record(ObjectID("bucket", o)); ok {
		t.Fatal("record kept")
	}
	if f.c.Stats().UsedBytes != 0 {
		t.Fatalf("usage %d after forgetting the only object", f.c.Stats().UsedBytes)
	}
}

// TestAccessTimesReachTheIndex: opens note access times in memory (no
// index write on the open path); Close writes them.
func TestAccessTimesReachTheIndex(t *testing.T) {
	f := newFixture(t, Options{})
	obj := f.cached("t", randBytes(80, testPart))
	id := ObjectID("bucket", obj)
	if err := f.db.TouchAll(map[string]time.Time{id: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	f.close()
	f.open(Options{})
	start := time.Now()
	f.openHandle(obj).Close()
	f.close()
	f.open(Options{})
	rec, ok, err := f.db.Record(id)
	if err != nil || !ok {
		t.Fatalf("record: %v %v", ok, err)
	}
	if rec.LastAccess.Before(start.Add(-time.Second)) {
		t.Fatalf("LastAccess %v after an open at %v: the access time was not written", rec.LastAccess, start)
	}
}

// A file opened a moment ago is not the least recently used, however
// recently it was cached: in a full cache that turns over in seconds, the
// object cached first and opened since must outlive one cached later and
// never opened again.
func TestEvictionSeesRecentOpens(t *testing.T) {
	// Room for four objects of a part each; a fetch that finds the cache
	// full frees its own part and evictHeadroom more.
	opts := Options{MaxBytes: 4 * testPart}
	f := newFixture(t, opts)
	var objs []index.Object
	var data [][]byte
	times := map[string]time.Time{}
	now := time.Now()
	for i := range 4 {
		data = append(data, randBytes(uint64(90+i), testPart))
		objs = append(objs, f.cached(fmt.Sprint("o", i), data[i]))
		times[ObjectID("bucket", objs[i])] = now.Add(time.Duration(i-10) * time.Second)
	}
	if err := f.db.TouchAll(times); err != nil { // o0 cached first, o3 last
		t.Fatal(err)
	}
	f.close()
	f.open(opts)
	f.readClosed(objs[0], data[0]) // o0 is now the most recently opened
	more := randBytes(99, testPart)
	f.readClosed(f.src.Put("more", more), more)
	for i, kept := range []bool{true, false, false, false} {
		if _, ok, _ := f.db.Record(ObjectID("bucket", objs[i])); ok != kept {
			t.Errorf("o%d cached %v, want %v (o0 was opened a moment ago, o1 to o3 not for 7 s or more)", i, ok, kept)
		}
	}
}

// TestEvictNoneKeepsWhatItHas: with EvictNone a full cache evicts nothing:
// epoch after epoch over more objects than fit, the objects cached first
// stay cached and are hits, and the rest are served from S3
// uncached, every byte right; the same epochs with LRU evict.
func TestEvictNoneKeepsWhatItHas(t *testing.T) {
	for _, c := range []struct {
		name     string
		policy   Eviction
		wantKept bool
	}{{"none", EvictNone, true}, {"lru", EvictLRU, false}} {
		t.Run(c.name, func(t *testing.T) {
			const limit = 3 * testPart
			f := newFixture(t, Options{MaxBytes: limit, Eviction: c.policy, ReadAhead: -1})
			var objs []index.Object
			var data [][]byte
			for i := range 6 {
				b := randBytes(uint64(300+i), testPart-100)
				data = append(data, b)
				objs = append(objs, f.src.Put(fmt.Sprintf("o%d", i), b))
			}
			epoch := func() {
				t.Helper()
				for i, o := range objs {
					f.readClosed(o, data[i])
				}
			}
			epoch()
			before := f.c.Stats()
			epoch()
			s := f.c.Stats()
			if s.UsedBytes > limit {
				t.Fatalf("the cache uses %d bytes, over its %d limit", s.UsedBytes, limit)
			}
			_, kept, _ := f.db.Record(ObjectID("bucket", objs[0]))
			if kept != c.wantKept {
				t.Errorf("first object cached after two epochs: %v, want %v", kept, c.wantKept)
			}
			if c.policy == EvictNone {
				if s.Evictions != 0 || !s.Full || s.Uncached == 0 {
					t.Errorf("stats %+v: want no eviction, full, uncached reads", s)
				}
				// The second epoch cached nothing new: the three that fit
				// were hits (two reads each), the rest went to S3 uncached.
				if s.BytesFromS3 != before.BytesFromS3 {
					t.Errorf("second epoch fetched %d bytes into the cache, want 0", s.BytesFromS3-before.BytesFromS3)
				}
				if hits := s.Hits - before.Hits; hits != 6 {
					t.Errorf("second epoch: %d hits, want 6 (the three cached objects)", hits)
				}
			} else if s.Evictions == 0 {
				t.Errorf("LRU evicted nothing over two epochs: %+v", s)
			}
		})
	}
}

// A round that finds nothing to evict remembers where it stopped, and a
// later round trusts that only until something could have changed: a pin
// dropped, or an object released.
func TestEvictionRemembersUntilSomethingChanges(t *testing.T) {
	f := newFixture(t, Options{MaxBytes: 3 * testPart})
	var objs []index.Object
	for i := range 3 {
		data := randBytes(uint64(400+i), testPart)
		objs = append(objs, f.src.Put(fmt.Sprintf("m/o%d", i), data))
		f.readClosed(objs[i], data)
	}
	if err := f.db.PutJob(index.Job{ID: "j", Paths: []string{"m"}, Created: time.Now(), State: index.JobDone}); err != nil {
		t.Fatal(err)
	}
	if err := f.db.Pin("j", map[string]int64{"m": 3}); err != nil {
		t.Fatal(err)
	}
	if err := f.c.reserve(testPart); !errors.Is(err, ErrCacheFull) {
		t.Fatalf("reserve with everything pinned: %v, want ErrCacheFull", err)
	}
	order, err := f.db.Oldest(nil, 10)
	if err != nil || len(order) != 3 {
		t.Fatalf("Oldest = %v, %v", order, err)
	}
	f.c.evictMu.Lock()
	memo := f.c.memo
	f.c.evictMu.Unlock()
	if !bytes.Equal(memo.pos, order[2].Pos) {
		t.Fatalf("the round remembered %q, want the newest record %q", memo.pos, order[2].Pos)
	}

	h := f.openHandle(objs[0]) // the oldest: open, so it must stay
	if err := f.db.Unpin("j"); err != nil {
		t.Fatal(err)
	}
	if err := f.c.reserve(testPart); err != nil {
		t.Fatalf("reserve after the unpin: %v; the round trusted a stale memo", err)
	}
	f.c.unreserve(testPart)
	for i, o := range objs {
		if _, ok, _ := f.db.Record(ObjectID("bucket", o)); ok != (i == 0) {
			t.Errorf("%s cached = %v after eviction, want %v", o.Key, ok, i == 0)
		}
	}
	if err := f.c.reserve(3 * testPart); !errors.Is(err, ErrCacheFull) {
		t.Fatalf("reserve past an open object: %v, want ErrCacheFull", err)
	}
	h.Close()
	if err := f.c.reserve(3 * testPart); err != nil {
		t.Fatalf("reserve after the close: %v; the round trusted a stale memo", err)
	}
	f.c.unreserve(3 * testPart)
	if _, ok, _ := f.db.Record(ObjectID("bucket", objs[0])); ok {
		t.Error("the closed object was not evicted")
	}
}

// Opens racing with eviction of the same objects: an open that finds an
// object being evicted waits, then opens it afresh, and every read gets
// the right bytes (run with -race).
func TestOpenDuringEvictionOpensAfresh(t *testing.T) {
	f := newFixture(t, Options{MaxBytes: 2 * testPart})
	var objs []index.Object
	var data [][]byte
	for i := range 6 {
		data = append(data, randBytes(uint64(500+i), testPart/2))
		objs = append(objs, f.src.Put(fmt.Sprintf("e/o%d", i), data[i]))
	}
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Go(func() {
			for i := range 60 {
				k := (r + i) % len(objs)
				h, err := f.c.Open(context.Background(), objs[k])
				if err != nil {
					t.Errorf("open %s: %v", objs[k].Key, err)
					return
				}
				got := make([]byte, len(data[k]))
				n, err := h.ReadAt(context.Background(), got, 0)
				h.Close()
				if (err != nil && !errors.Is(err, io.EOF)) || !bytes.Equal(got[:n], data[k]) {
					t.Errorf("%s: %d bytes, %v, or wrong bytes", objs[k].Key, n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if f.c.Stats().Evictions == 0 {
		t.Fatal("nothing was evicted: the test raced nothing")
	}
	if s := f.c.Stats(); s.UsedBytes > 2*testPart || s.OpenObjects != 0 {
		t.Fatalf("after the race: %+v", s)
	}
}
