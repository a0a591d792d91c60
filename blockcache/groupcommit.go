package blockcache

import (
	"sync"
	"time"

	"s3cachefs/index"
)

// groupCommit records the blocks of concurrent fetches in shared index
// transactions (doc.go, "Group commit"). A fetch that finds no commit
// running leads: it commits what is queued, itself included, then hands
// the lead to the first fetch that queued meanwhile, whose transaction
// takes everything queued by then. An urgent add (a reader waits on its
// fetch) is committed at once; while every add queued is a background one
// (a prefetch's) and more fetches are on their way, the leader gathers
// them first, up to gatherMax adds or gatherWait after the oldest was
// queued. It starts no goroutine: every commit runs on a fetch's own.
type groupCommit struct {
	db *index.DB // set once
	// kick wakes a gathering leader: an add was queued or promoted, or a
	// fetch on its way ended. Buffered, one; sent to without blocking.
	kick chan struct{}

	mu    sync.Mutex // guards queue, busy, coming and the fields of queued adds; a leaf
	queue []*pendingAdd
	busy  bool // a leader is gathering or committing
	// coming counts fetches between their start (expect) and their end
	// (arrived): those queued, and those that may queue soon.
	coming int
}

// Gathering bounds for background adds: enough adds per transaction that
// a prefetch of small files costs well under 0.1 index commits per file
// even at a few hundred files a second, and a bounded delay for each.
const (
	gatherMax  = 64
	gatherWait = 100 * time.Millisecond
)

func newGroupCommit(db *index.DB) *groupCommit {
	return &groupCommit{db: db, kick: make(chan struct{}, 1)}
}

// pendingAdd is one fetch's add, queued for the next transaction.
type pendingAdd struct {
	add index.BlockAdd
	// urgent is the fetch's promotion channel, closed once a reader
	// waits on it; nil means urgent from the start.
	urgent   <-chan struct{}
	queuedAt time.Time
	// wake is closed when res is set, or when this add is to lead (lead
	// set first).
	wake chan struct{}
	lead bool
	res  index.Added
}

// expect notes a fetch that may queue an add; arrived must follow, once
// it has no more to queue.
func (g *groupCommit) expect() {
	g.mu.Lock()
	g.coming++
	g.mu.Unlock()
}

// arrived notes the end of a fetch noted by expect.
func (g *groupCommit) arrived() {
	g.mu.Lock()
	g.coming--
	g.mu.Unlock()
	g.hurry()
}

// hurry wakes a gathering leader to look at the queue again.
func (g *groupCommit) hurry() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// enqueue queues a for the next transaction; it never blocks, so it may be
// called under object.mu (which orders the adds of one object). urgent is
// as in pendingAdd.
func (g *groupCommit) enqueue(a index.BlockAdd, urgent <-chan struct{}) *pendingAdd {
	p := &pendingAdd{add: a, urgent: urgent, queuedAt: time.Now(), wake: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, p)
	if !g.busy {
		g.busy, p.lead = true, true
		close(p.wake)
	}
	g.mu.Unlock()
	g.hurry()
	return p
}

// wait returns p's result once it is committed, committing it (and the
// others queued) if p leads.
func (g *groupCommit) wait(p *pendingAdd) index.Added {
	<-p.wake
	if !p.lead {
		return p.res
	}
	g.gather()
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

// gather waits, as the leader, until the queue should be committed.
func (g *groupCommit) gather() {
	var timer *time.Timer
	for {
		g.mu.Lock()
		ready, oldest := g.readyLocked()
		g.mu.Unlock()
		if ready {
			break
		}
		if timer == nil {
			timer = time.NewTimer(time.Until(oldest.Add(gatherWait)))
			defer timer.Stop()
		}
		select {
		case <-g.kick:
		case <-timer.C:
			return
		}
	}
}

// readyLocked reports whether the queue is to be committed now: it holds
// an urgent add or gatherMax adds, or no other fetch is on its way; else
// it returns when the oldest add was queued. g.mu is held.
func (g *groupCommit) readyLocked() (bool, time.Time) {
	if len(g.queue) >= gatherMax || g.coming <= len(g.queue) {
		return true, time.Time{}
	}
	for _, q := range g.queue {
		if q.urgent == nil || isClosed(q.urgent) {
			return true, time.Time{}
		}
	}
	return false, g.queue[0].queuedAt
}
