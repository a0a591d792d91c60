package index

import (
	"fmt"
	"math/bits"
)

// NumBlocks returns how many blocks of blockSize bytes hold size bytes:
// ceil(size/blockSize), and 0 for an empty object. blockSize must be
// positive; NumBlocks panics otherwise, as integer division by zero does.
func NumBlocks(size, blockSize int64) int64 {
	if blockSize <= 0 {
		panic(fmt.Sprintf("index: NumBlocks with block size %d", blockSize))
	}
	if size <= 0 {
		return 0
	}
	// (size-1)/blockSize+1 rather than (size+blockSize-1)/blockSize, which
	// overflows for sizes near the int64 limit.
	return (size-1)/blockSize + 1
}

// Blocks is a fixed-length bitmap of which blocks of an object are present.
// The zero value tracks no blocks. Blocks is a small value whose bitmap is
// shared by copies: use Clone before changing a copy another goroutine may
// read. Methods are not safe for concurrent use with Set.
type Blocks struct {
	n     int64    // number of blocks tracked
	words []uint64 // bit i of words[i/64] is block i; bits past n are zero
}

// NewBlocks returns an empty bitmap of n blocks. It panics if n is negative.
func NewBlocks(n int64) Blocks {
	if n < 0 {
		panic(fmt.Sprintf("index: NewBlocks(%d)", n))
	}
	return Blocks{n: n, words: make([]uint64, wordsFor(n))}
}

// wordsFor is how many 64-bit words hold n bits.
func wordsFor(n int64) int64 { return n/64 + min(n%64, 1) }

// Len returns the number of blocks tracked.
func (b Blocks) Len() int64 { return b.n }

// Has reports whether block i is present; false when i is out of range.
func (b Blocks) Has(i int64) bool {
	if i < 0 || i >= b.n {
		return false
	}
	return b.words[i/64]&(1<<(i%64)) != 0
}

// Set marks block i present. It panics if i is out of range: a block
// outside the object is a caller bug, never data to record.
func (b *Blocks) Set(i int64) {
	if i < 0 || i >= b.n {
		panic(fmt.Sprintf("index: Blocks.Set(%d) out of range [0,%d)", i, b.n))
	}
	b.words[i/64] |= 1 << (i % 64)
}

// Clear marks block i absent; it panics if i is out of range.
func (b *Blocks) Clear(i int64) {
	if i < 0 || i >= b.n {
		panic(fmt.Sprintf("index: block %d out of range [0,%d)", i, b.n))
	}
	b.words[i/64] &^= 1 << (i % 64)
}

// Count returns the number of blocks present.
func (b Blocks) Count() int64 {
	var c int
	for _, w := range b.words {
		c += bits.OnesCount64(w)
	}
	return int64(c)
}

// Full reports whether every block is present (true for zero blocks).
func (b Blocks) Full() bool { return b.Count() == b.n }

// Clone returns a copy that shares no memory with b.
func (b Blocks) Clone() Blocks {
	return Blocks{n: b.n, words: append([]uint64(nil), b.words...)}
}

// FirstMissing returns the first block i >= from that is not present, or
// Len() when all of them are. A negative from counts as 0.
func (b Blocks) FirstMissing(from int64) int64 {
	from = max(from, 0)
	for w := from / 64; w < int64(len(b.words)); w++ {
		// Treat blocks before from as present so they are skipped.
		word := b.words[w]
		if w == from/64 {
			word |= 1<<(from%64) - 1
		}
		if word != ^uint64(0) {
			return min(w*64+int64(bits.TrailingZeros64(^word)), b.n)
		}
	}
	return b.n
}
