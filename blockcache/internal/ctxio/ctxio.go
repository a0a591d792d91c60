// Package ctxio holds the io helpers that several packages of the block
// cache need and none owns.
package ctxio

import (
	"context"
	"io"
)

// Reader returns r that stops reading, with ctx's error, once ctx ends:
// for long copies that io.Copy cannot cancel.
func Reader(ctx context.Context, r io.Reader) io.Reader { return reader{ctx, r} }

type reader struct {
	ctx context.Context
	r   io.Reader
}

func (c reader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
