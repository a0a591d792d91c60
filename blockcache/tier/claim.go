package tier

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// DefaultClaimTTL is how long a claim outlives the last sign of life of
// the node that made it: a node killed while fetching delays the others
// by about this much.
const DefaultClaimTTL = 30 * time.Second

// claimPoll bounds how long AwaitClaim waits between looks at the tier.
const claimPoll = 250 * time.Millisecond

// claimPath is where the claim on the entry named name lives.
func (f *Folder) claimPath(name string) string {
	return filepath.Join(f.root, "claims", name)
}

// Claim makes this process the one that fetches v from S3 for every node
// of the tier, until release is called or the claim expires: it is a file
// created with O_EXCL in claims/, whose modification time this process
// renews every quarter of the TTL until release. ok is false, with no
// error, when another node holds a claim on v; an error wrapping
// io/fs.ErrExist means v's entry is in the tier now. release removes the
// claim if it is still this one's; it may be called more than once.
func (f *Folder) Claim(ctx context.Context, v Version) (release func(), ok bool, err error) {
	name := Name(v)
	if _, err := os.Stat(f.unprovablePath(name)); err == nil {
		// Nothing to wait for: no node can publish it.
		return func() {}, true, nil
	}
	path := f.claimPath(name)
	stamp := append(claimStamp(), '\n')
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o664)
	if errors.Is(err, iofs.ErrExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("claim %s in the shared cache: %w", v.Key, err)
	}
	_, err = file.Write(stamp)
	err = errors.Join(err, file.Close())
	mine := func() bool {
		b, err := os.ReadFile(path)
		return err == nil && bytes.Equal(b, stamp)
	}
	drop := func() {
		if mine() {
			os.Remove(path)
		}
	}
	if err != nil {
		drop()
		return nil, false, fmt.Errorf("claim %s in the shared cache: %w", v.Key, err)
	}
	if _, err := os.Stat(f.entryPath(name)); err == nil {
		// Published between the caller's miss and this claim.
		drop()
		return nil, false, fmt.Errorf("shared cache entry of %s: %w", v.Key, iofs.ErrExist)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(f.claimTTL / 4)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				b, err := os.ReadFile(path)
				if errors.Is(err, iofs.ErrNotExist) || (err == nil && !bytes.Equal(b, stamp)) {
					return // broken by a node that took it for dead
				}
				// A read that failed (NFS hiccup) is no reason to stop.
				os.Chtimes(path, now, now)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			<-done
			drop()
		})
	}, true, nil
}

// claimStamp names a claim's maker: its host, pid and a random token.
func claimStamp() []byte {
	token := make([]byte, 16)
	rand.Read(token)
	host, _ := os.Hostname()
	return fmt.Appendf(nil, "%s %d %s", host, os.Getpid(), hex.EncodeToString(token))
}

// AwaitClaim returns once v's entry is in the tier, or the claim on it is
// gone or expired: no renewal seen for the TTL, by this process's clock
// (clocks of nodes need not agree), or its time older than ten TTLs. An
// expired claim is removed, so that a Claim can be made.
func (f *Folder) AwaitClaim(ctx context.Context, v Version) error {
	name := Name(v)
	path := f.claimPath(name)
	return awaitClaim(ctx, f.claimTTL, func() (claimSeen, error) {
		for _, p := range []string{f.entryPath(name), f.unprovablePath(name)} {
			if _, err := os.Stat(p); err == nil {
				return claimSeen{}, errClaimOver
			}
		}
		fi, err := os.Stat(path)
		if errors.Is(err, iofs.ErrNotExist) {
			return claimSeen{}, errClaimOver
		}
		if err != nil {
			return claimSeen{}, fmt.Errorf("claim on %s in the shared cache: %w", v.Key, err)
		}
		return claimSeen{sign: fi.ModTime().String(), time: fi.ModTime(), expire: func() { f.breakClaim(path, fi) }}, nil
	})
}

// claimSeen is one look at a claim for awaitClaim: a sign that changes
// with every renewal, the claim's own time as its renewer's clock put it
// (zero: a clock not to be trusted against this one's), and what breaks
// it once expired.
type claimSeen struct {
	sign   string
	time   time.Time
	expire func()
}

// errClaimOver ends awaitClaim's looks: the entry is there, or the claim
// gone (or the object cannot be shared).
var errClaimOver = errors.New("claim over")

// awaitClaim looks at a claim (look) until it is over, or expired: no
// change of sign seen for ttl by this process's clock, or its time (when
// given) older than ten ttls, which lets a claim long dead go at once;
// then it breaks it. The looks come quickly at first, then every claimPoll.
func awaitClaim(ctx context.Context, ttl time.Duration, look func() (claimSeen, error)) error {
	var seen string
	var since time.Time
	wait := 10 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		c, err := look()
		if errors.Is(err, errClaimOver) {
			return nil
		}
		if err != nil {
			return err
		}
		now := time.Now()
		if c.sign != seen {
			seen, since = c.sign, now
		}
		if now.Sub(since) > ttl || (!c.time.IsZero() && now.Sub(c.time) > 10*ttl) {
			c.expire()
			return nil
		}
		wait = min(2*wait, claimPoll)
		t.Reset(wait)
	}
}

// breakClaim removes the expired claim at path, seen as fi. It is renamed
// away first, so that of the nodes breaking it at once one does; if the
// file renamed is not the one seen (a fresh claim took its place), it is
// put back.
func (f *Folder) breakClaim(path string, fi iofs.FileInfo) {
	var salt [8]byte
	rand.Read(salt[:])
	away := filepath.Join(f.root, "tmp", filepath.Base(path)+".expired."+hex.EncodeToString(salt[:]))
	if now, err := os.Lstat(path); err != nil || !os.SameFile(now, fi) || !now.ModTime().Equal(fi.ModTime()) {
		return // gone, replaced or renewed meanwhile
	}
	if os.Rename(path, away) != nil {
		return
	}
	if now, err := os.Stat(away); err == nil && !os.SameFile(now, fi) {
		os.Link(away, path)
	}
	os.Remove(away)
}
