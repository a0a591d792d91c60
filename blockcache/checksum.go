package blockcache

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"

	"s3cachefs/index"
)

// castagnoli is the CRC-32C table; the CPU computes it in hardware.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// blockSum is the checksum recorded for a block. 0 is kept to mean "not
// known", so a block whose CRC is 0 records 1 instead: a one-in-four-billion
// chance of missing damage in that block only.
func blockSum(b []byte) uint32 {
	if s := crc32.Checksum(b, castagnoli); s != 0 {
		return s
	}
	return 1
}

// check reads back the blocks [first, last] of o not yet checked in this
// run and compares them with their recorded sums. A damaged block is
// forgotten, so that it is fetched again; check then returns ErrCorrupt.
// Blocks without a recorded sum (written by an older version) are taken as
// they are.
func (c *Cache) check(o *object, first, last int64) error {
	var pb *[]byte
	for b := first; b <= last; b++ {
		o.mu.Lock()
		if o.verified.Len() == 0 {
			o.verified = index.NewBlocks(o.rec.Present.Len())
		}
		done := o.verified.Has(b)
		_, known := o.rec.Sum(b)
		o.mu.Unlock()
		if done || !known {
			continue // nothing to compare a block without a sum with
		}
		if pb == nil {
			pb = c.blocks.Get().(*[]byte)
			defer c.blocks.Put(pb)
		}
		if _, err := c.readBlock(o, b, *pb); err != nil {
			return err
		}
	}
	return nil
}

// readBlock reads block b of o from its cache file into buf (at least a
// block long) and compares it with the block's recorded sum; it returns
// the block's bytes, buf[:n]. A damaged block is forgotten, so that it is
// fetched again, and readBlock returns ErrCorrupt: its bytes are never
// returned. A block without a recorded sum (written by an older version)
// is taken as it is.
func (c *Cache) readBlock(o *object, b int64, buf []byte) ([]byte, error) {
	bs := c.opts.BlockSize
	o.mu.Lock()
	want, known := o.rec.Sum(b)
	o.mu.Unlock()
	n := min(bs, o.obj.Size-b*bs)
	_, err := readFile(o, buf[:n], b*bs)
	c.checks.Add(1)
	if err == nil && known && blockSum(buf[:n]) != want {
		err = fmt.Errorf("%s at offset %d: %w", o.obj.Key, b*bs, ErrCorrupt)
	}
	if errors.Is(err, ErrCorrupt) {
		c.log.Warn("cached block damaged; fetching the object again", "key", o.obj.Key, "offset", b*bs)
		c.corrupt.Add(1)
		if ferr := c.forgetBlock(o, b); ferr != nil {
			return nil, ferr
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	if known {
		o.mu.Lock()
		if o.verified.Len() == 0 {
			o.verified = index.NewBlocks(o.rec.Present.Len())
		}
		o.verified.Set(b)
		o.mu.Unlock()
	}
	return buf[:n], nil
}

// forgetBlock drops block b of o, in the index and in memory, so that
// reads fetch it again.
func (c *Cache) forgetBlock(o *object, b int64) error {
	if err := c.db.RemoveBlock(o.id, b); err != nil {
		return err
	}
	bs := c.opts.BlockSize
	o.mu.Lock()
	if o.rec.Present.Has(b) {
		o.rec.Present.Clear(b)
		c.used.Add(-roundUp(min(bs, o.obj.Size-b*bs), diskBlock))
	}
	if b < int64(len(o.rec.Sums)) {
		o.rec.Sums[b] = 0
	}
	if o.verified.Len() > b {
		o.verified.Clear(b)
	}
	o.mu.Unlock()
	return nil
}

// Scrub reads back every present block of obj that has a recorded sum and
// compares them. Damaged blocks are forgotten (fetched again on next read)
// and their offsets returned.
func (c *Cache) Scrub(ctx context.Context, obj index.Object) ([]int64, error) {
	o, err := c.acquire(obj)
	if err != nil {
		return nil, err
	}
	defer c.release(o)
	bs := c.opts.BlockSize
	pb := c.blocks.Get().(*[]byte)
	defer c.blocks.Put(pb)
	buf := *pb
	var damaged []int64
	o.mu.Lock()
	nblocks := o.rec.Present.Len()
	o.mu.Unlock()
	for b := int64(0); b < nblocks; b++ {
		if err := ctx.Err(); err != nil {
			return damaged, err
		}
		o.mu.Lock()
		want, known := o.rec.Sum(b)
		present := o.rec.Present.Has(b)
		o.mu.Unlock()
		if !present || !known {
			continue
		}
		n := min(bs, o.obj.Size-b*bs)
		_, err := readFile(o, buf[:n], b*bs)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			return damaged, err
		}
		if err == nil && blockSum(buf[:n]) == want {
			continue
		}
		damaged = append(damaged, b*bs)
		c.corrupt.Add(1)
		if err := c.forgetBlock(o, b); err != nil {
			return damaged, err
		}
	}
	return damaged, nil
}
