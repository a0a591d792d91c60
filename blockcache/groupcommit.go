package blockcache

import (
	"sync"

	"s3cachefs/index"
)

// groupCommit records the blocks of concurrent fetches in shared index
// transactions (doc.go, "Group commit"). A fetch that finds no commit
// running leads: it commits what is queued, itself included, then hands
// the lead to the first fetch that queued meanwhile, whose transaction
// takes everything queued by then. No fetch waits for a timer, an idle
// cache commits each fetch at once, and a busy one commits as many fetches
// per transaction as arrived during the previous one. It starts no
// goroutine: every commit runs on a fetch's own.
type groupCommit struct {
	db *index.DB // set once

	mu    sync.Mutex // guards queue, busy and the fields of queued adds; a leaf
	queue []*pendingAdd
	busy  bool // a leader is committing
}

// pendingAdd is one fetch's add, queued for the next transaction.
type pendingAdd struct {
	add index.BlockAdd
	// wake is closed when res is set, or when this add is to lead (lead
	// set first).
	wake chan struct{}
	lead bool
	res  index.Added
}

// enqueue queues a for the next transaction; it never blocks, so it may be
// called under object.mu (which orders the adds of one object).
func (g *groupCommit) enqueue(a index.BlockAdd) *pendingAdd {
	p := &pendingAdd{add: a, wake: make(chan struct{})}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.queue = append(g.queue, p)
	if !g.busy {
		g.busy, p.lead = true, true
		close(p.wake)
	}
	return p
}

// wait returns p's result once it is committed, committing it (and the
// others queued) if p leads.
func (g *groupCommit) wait(p *pendingAdd) index.Added {
	<-p.wake
	if !p.lead {
		return p.res
	}
	g.mu.Lock()
	batch := g.queue
	g.queue = nil
	g.mu.Unlock()
	adds := make([]index.BlockAdd, len(batch))
	for i, q := range batch {
		adds[i] = q.add
	}
	res := g.db.AddBlocksMany(adds)
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, q := range batch {
		q.res = res[i]
		if !q.lead {
			close(q.wake)
		}
	}
	if len(g.queue) > 0 {
		next := g.queue[0]
		next.lead = true
		close(next.wake)
	} else {
		g.busy = false
	}
	return p.res
}
