package index

import "testing"

func TestNumBlocks(t *testing.T) {
	for _, c := range []struct{ size, bs, want int64 }{
		{0, 1 << 20, 0},
		{1, 1 << 20, 1},
		{1 << 20, 1 << 20, 1},
		{1<<20 + 1, 1 << 20, 2},
		{70 << 20, 1 << 20, 70},
		{1<<63 - 1, 1, 1<<63 - 1},
		{1<<63 - 1, 1 << 20, 1 << 43},
	} {
		if got := NumBlocks(c.size, c.bs); got != c.want {
			t.Errorf("NumBlocks(%d, %d) = %d, want %d", c.size, c.bs, got, c.want)
		}
	}
}

func TestBlocksBookkeeping(t *testing.T) {
	b := NewBlocks(130) // spans three words, the last one partly
	if b.Len() != 130 || b.Count() != 0 || b.Full() || b.FirstMissing(0) != 0 {
		t.Fatalf("new bitmap: len %d count %d full %v", b.Len(), b.Count(), b.Full())
	}
	for _, i := range []int64{0, 1, 63, 64, 129} {
		b.Set(i)
	}
	b.Set(64) // setting twice counts once
	if b.Count() != 5 {
		t.Errorf("Count = %d, want 5", b.Count())
	}
	for i, want := range map[int64]bool{0: true, 2: false, 63: true, 64: true, 65: false, 129: true, 130: false, -1: false} {
		if b.Has(i) != want {
			t.Errorf("Has(%d) = %v, want %v", i, !want, want)
		}
	}
	for from, want := range map[int64]int64{-3: 2, 0: 2, 2: 2, 63: 65, 64: 65, 129: 130, 130: 130, 500: 130} {
		if got := b.FirstMissing(from); got != want {
			t.Errorf("FirstMissing(%d) = %d, want %d", from, got, want)
		}
	}

	c := b.Clone()
	c.Set(2)
	if b.Has(2) {
		t.Error("Set on a clone changed the original")
	}
	for i := range int64(130) {
		c.Set(i)
	}
	if !c.Full() || c.FirstMissing(0) != 130 {
		t.Errorf("all set: Full %v FirstMissing %d", c.Full(), c.FirstMissing(0))
	}
}

func TestBlocksZeroValue(t *testing.T) {
	var b Blocks
	if b.Len() != 0 || b.Has(0) || b.Count() != 0 || !b.Full() || b.FirstMissing(0) != 0 {
		t.Error("zero Blocks must be an empty, full bitmap of no blocks")
	}
	if NewBlocks(0).Clone().Len() != 0 {
		t.Error("clone of empty bitmap")
	}
}

func TestBlocksSetOutOfRangePanics(t *testing.T) {
	for _, i := range []int64{-1, 10, 64} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Set(%d) on 10 blocks did not panic", i)
				}
			}()
			b := NewBlocks(10)
			b.Set(i)
		}()
	}
}

func TestPresentBytesCountsPartialLastBlock(t *testing.T) {
	r := Record{Size: 2*1000 + 300, BlockSize: 1000, Present: NewBlocks(3)}
	steps := []struct {
		set  int64
		want int64
	}{{2, 300}, {0, 1300}, {1, 2300}}
	for _, s := range steps {
		r.Present.Set(s.set)
		if got := r.PresentBytes(); got != s.want {
			t.Errorf("after block %d: PresentBytes = %d, want %d", s.set, got, s.want)
		}
	}
	if !r.Complete() {
		t.Error("all blocks set but not Complete")
	}
	exact := Record{Size: 2000, BlockSize: 1000, Present: NewBlocks(2)}
	exact.Present.Set(1)
	if got := exact.PresentBytes(); got != 1000 {
		t.Errorf("size a multiple of the block: PresentBytes = %d, want 1000", got)
	}
}
