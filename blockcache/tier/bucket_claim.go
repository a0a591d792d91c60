package tier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"sync"
	"time"

	"s3cachefs/index"
)

// maxClaim bounds what is read of a claim object: ours are one short line.
const maxClaim = 4096

func (b *Bucket) claimKey(name string) string { return b.root + "claims/" + name }

// Claim makes this process the one that fetches v from S3 for every node
// of the tier, until release is called or the claim expires: it is an
// object created with If-None-Match: * under claims/, holding this
// process's host, pid and a random token, which this process puts again
// (unconditionally, with a renewal count, so that its ETag and
// modification time change) every quarter of the TTL until release. ok
// is false, with no error, when another node holds a claim on v; an error
// wrapping io/fs.ErrExist means v's entry is in the tier now. release
// deletes the claim if it is still this one's; it may be called more than
// once, and stops the renewals.
//
// Between the look that finds a claim still ours and the renewal that
// follows, another node may break it as expired and claim v itself; the
// renewal then replaces that node's claim, and both fetch v from S3. It
// costs a fetch, never a wrong byte.
func (b *Bucket) Claim(ctx context.Context, v Version) (release func(), ok bool, err error) {
	name := Name(v)
	if _, err := b.objs.Head(ctx, b.entryKey(name)+unprovableSuffix); err == nil {
		return func() {}, true, nil // as Folder.Claim
	}
	key := b.claimKey(name)
	stamp := claimStamp()
	first := claimBody(stamp, 0)
	err = b.objs.Create(ctx, key, bytes.NewReader(first), int64(len(first)))
	if errors.Is(err, iofs.ErrExist) {
		// Another node's claim; or ours, from a create that was sent
		// again after its answer was lost.
		if mine, _, _ := b.claimIsMine(ctx, key, stamp); !mine {
			return nil, false, nil
		}
	} else if err != nil {
		return nil, false, fmt.Errorf("claim %s in the shared cache: %w", v.Key, err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), removeTimeout)
		defer cancel()
		if mine, etag, _ := b.claimIsMine(ctx, key, stamp); mine {
			b.objs.Delete(ctx, key, etag)
		}
	}
	if _, err := b.objs.Head(ctx, b.entryKey(name)); err == nil {
		// Published between the caller's miss and this claim.
		drop()
		return nil, false, fmt.Errorf("shared cache entry of %s: %w", v.Key, iofs.ErrExist)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.renew(rctx, key, stamp)
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			stop()
			<-done
			drop()
		})
	}, true, nil
}

// renew puts the claim at key again every quarter of the TTL until ctx
// ends or the claim is found to be another's (broken by a node that took
// this one for dead). A look that fails (the bucket unreachable for a
// while) is no reason to stop.
func (b *Bucket) renew(ctx context.Context, key string, stamp []byte) {
	t := time.NewTicker(b.claimTTL / 4)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		mine, _, err := b.claimIsMine(ctx, key, stamp)
		if err == nil && !mine {
			return
		}
		if mine {
			body := claimBody(stamp, n)
			b.objs.Put(ctx, key, bytes.NewReader(body), int64(len(body)))
		}
	}
}

// claimIsMine reports whether the claim at key is the one of stamp, and
// its ETag. A claim that is not there, or another's, is not mine with no
// error; err is for a look that failed.
func (b *Bucket) claimIsMine(ctx context.Context, key string, stamp []byte) (mine bool, etag string, err error) {
	info, err := b.objs.Head(ctx, key)
	if errors.Is(err, iofs.ErrNotExist) {
		return false, "", nil
	}
	if err != nil {
		return false, "", err
	}
	if info.Size < int64(len(stamp)) || info.Size > maxClaim {
		return false, info.ETag, nil
	}
	body, err := b.objs.GetRange(ctx, key, info.ETag, 0, info.Size)
	if errors.Is(err, iofs.ErrNotExist) || errors.Is(err, index.ErrStale) {
		return false, "", nil // replaced or gone since the HEAD
	}
	if err != nil {
		return false, "", err
	}
	defer body.Close()
	got, err := io.ReadAll(body)
	if err != nil {
		return false, "", err
	}
	return bytes.HasPrefix(got, stamp), info.ETag, nil
}

// claimBody is what a claim holds at its nth renewal (0: as created).
func claimBody(stamp []byte, n int) []byte {
	return fmt.Appendf(bytes.Clone(stamp), " %d\n", n)
}

// AwaitClaim returns once v's entry is in the tier, or the claim on it is
// gone or expired: neither its ETag nor its modification time changed for
// the TTL, by this process's clock (clocks of nodes and of the bucket need
// not agree). An expired claim is deleted if it is still the version seen,
// so that a Claim can be made.
func (b *Bucket) AwaitClaim(ctx context.Context, v Version) error {
	name := Name(v)
	key := b.claimKey(name)
	return awaitClaim(ctx, b.claimTTL, func() (claimSeen, error) {
		for _, k := range []string{b.entryKey(name), b.entryKey(name) + unprovableSuffix} {
			if _, err := b.objs.Head(ctx, k); err == nil {
				return claimSeen{}, errClaimOver
			}
		}
		info, err := b.objs.Head(ctx, key)
		if errors.Is(err, iofs.ErrNotExist) {
			return claimSeen{}, errClaimOver
		}
		if err != nil {
			return claimSeen{}, fmt.Errorf("claim on %s in the shared cache: %w", v.Key, err)
		}
		// Of the nodes breaking it at once, each deletes only the
		// version it saw; a fresh claim made since stays.
		// No time: LastModified is the server's clock, which may lag
		// the nodes' by more than ten TTLs; only a sign unchanged for
		// the TTL, by this node's clock, expires a claim.
		return claimSeen{sign: info.ETag + " " + info.LastModified.String(),
			expire: func() { b.objs.Delete(ctx, key, info.ETag) }}, nil
	})
}
