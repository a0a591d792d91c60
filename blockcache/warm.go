package blockcache

import (
	"context"
	"errors"

	"s3cachefs/index"
)

// Warm fetches every block of obj that is not on SSD yet, at background
// priority, and waits for them. progress, if set, is called with the bytes
// of each part as it becomes present (including parts already there).
// Reads of the object during Warm are served first. With a shared tier, an
// object of which nothing is cached is copied from the tier if it holds
// it; else Warm claims it there before fetching it from S3, or, if another
// node holds the claim, waits for that node to publish it.
func (c *Cache) Warm(ctx context.Context, obj index.Object, progress func(bytes int64)) error {
	return c.warm(ctx, obj, progress, true)
}

// WarmUnclaimed is Warm, except that it returns an error wrapping
// ErrClaimed at once, having fetched nothing, where Warm would wait for
// another node: a prefetch of many objects warms the others meanwhile.
func (c *Cache) WarmUnclaimed(ctx context.Context, obj index.Object, progress func(bytes int64)) error {
	return c.warm(ctx, obj, progress, false)
}

func (c *Cache) warm(ctx context.Context, obj index.Object, progress func(bytes int64), waitClaim bool) error {
	o, err := c.acquire(obj)
	if err != nil {
		return err
	}
	defer c.release(o)
	if c.opts.Tier != nil {
		won, err := c.claimForWarm(ctx, o, waitClaim)
		if won {
			// A claim not handed to the publisher (the object is not
			// complete) is released as Warm returns.
			defer c.dropClaim(o)
		}
		if err != nil {
			return err
		}
	}
	nblocks := index.NumBlocks(obj.Size, c.opts.BlockSize)
	per := c.opts.PartSize / c.opts.BlockSize
	nparts := (nblocks + per - 1) / per
	// Keep a few parts of the object in flight: enough to use the gate,
	// few enough that a cancelled job leaves little running behind it.
	var queue []*fetch
	next := int64(0) // part whose progress is reported next
	wait := func() error {
		f := queue[0]
		queue = queue[1:]
		for f != nil {
			select {
			case <-f.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			switch {
			case errors.Is(f.err, errTierFallback):
				// Not filled from the shared tier: fetch this part and
				// the others queued on the fill from S3.
				fill := f
				f = c.startFetch(o, next, false)
				for i, q := range queue {
					if q == fill {
						queue[i] = c.startFetch(o, next+1+int64(i), false)
					}
				}
				continue
			case f.err != nil:
				return f.err
			}
			break
		}
		if progress != nil {
			start := next * c.opts.PartSize
			progress(min(start+c.opts.PartSize, obj.Size) - start)
		}
		next++
		return nil
	}
	for p := int64(0); p < nparts; p++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		queue = append(queue, c.startFetch(o, p, false))
		if len(queue) >= c.warmWindow() {
			if err := wait(); err != nil {
				return err
			}
		}
	}
	for len(queue) > 0 {
		if err := wait(); err != nil {
			return err
		}
	}
	return nil
}

// warmBytes is about how many bytes of one object Warm keeps in flight
// (at least four parts): enough GETs to fill a fast link from a few
// objects at a time, whatever the part size.
const warmBytes = 32 << 20

// warmWindow is how many parts of one object Warm keeps in flight.
func (c *Cache) warmWindow() int {
	return int(max(4, warmBytes/c.opts.PartSize))
}

// WarmWindow returns how many bytes of one object Warm keeps in flight at
// most: a job fetching many objects at once can budget by it.
func (c *Cache) WarmWindow() int64 {
	return int64(c.warmWindow()) * c.opts.PartSize
}
