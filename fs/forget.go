package fs

import (
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
)

// defaultMaxNodes is Options.MaxNodes when it is zero: about 55 MB of file
// nodes (each costs some 550 bytes of go-fuse and our state).
const defaultMaxNodes = 100_000

// nodeLimit bounds the file nodes the daemon keeps for the kernel. The
// kernel holds a reference on every inode it looked up until it forgets it,
// which it does only under memory pressure: a scan of a million files would
// otherwise keep a million nodes here. When more than max file nodes are
// live, the sweeper asks the kernel to forget the least recently used ones
// that are not open (FUSE_NOTIFY_PRUNE where the kernel takes it, else a
// delete notification for the name, which makes the kernel drop the inode
// once nothing uses it). A forgotten name is looked up again from the Tree
// on its next use, at the cost of one LOOKUP.
//
// Recency is a second-chance queue: nodes enter at the back when created;
// a sweep takes them from the front, and a node used since it entered
// (looked up again or opened) goes to the back instead of being pruned.
type nodeLimit struct {
	max int // file nodes to keep; <= 0: no bound (set once)

	mu      sync.Mutex
	queue   []*fileNode // guarded by mu; nodes that may be pruned, oldest first
	head    int         // guarded by mu; queue[head:] is live
	live    int         // guarded by mu; file nodes made and not yet forgotten
	added   int         // guarded by mu; nodes queued since the last sweep
	stopped bool        // guarded by mu; no sweep starts after stop

	wake chan struct{} // capacity 1: a sweep is due
	done chan struct{} // closed by stop
	wg   sync.WaitGroup
}

// pruner is what a sweep hands the nodes it picked to, so that tests can
// see what it would ask the kernel.
type pruner interface {
	// prune asks the kernel to forget nodes (none is open).
	prune(nodes []*fileNode)
}

func newNodeLimit(max int) *nodeLimit {
	return &nodeLimit{max: max, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// start runs the sweeper until stop. Called once, after the mount is up and
// only when the FUSE side takes notifications.
func (l *nodeLimit) start(p pruner) {
	if l.max <= 0 {
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-l.done:
				return
			case <-l.wake:
				if batch := l.pick(); len(batch) > 0 {
					p.prune(batch)
				}
			}
		}
	}()
}

// stop ends the sweeper and waits for it.
func (l *nodeLimit) stop() {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	l.stopped = true
	l.mu.Unlock()
	close(l.done)
	l.wg.Wait()
}

// made records a new file node handed to the kernel.
func (l *nodeLimit) made(n *fileNode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.live++
	l.pushLocked(n)
}

// used records that the kernel was handed n again (a Lookup found it) or
// opened it: it is recent, and back in the queue if a sweep took it out
// without the kernel forgetting it.
func (l *nodeLimit) used(n *fileNode) {
	n.recent.Store(true)
	if n.queued.Load() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !n.queued.Load() && !n.forgotten.Load() {
		l.pushLocked(n)
	}
}

func (l *nodeLimit) pushLocked(n *fileNode) {
	n.queued.Store(true)
	l.queue = append(l.queue, n)
	l.added++
	// Sweep once over the bound, and again only after a tenth of the
	// bound is new: a sweep whose nodes the kernel keeps (in use) must
	// not make every later lookup scan the queue.
	if l.max > 0 && l.live > l.max && l.added >= max(1, l.max/10) {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// forgot records that the kernel forgot n.
func (l *nodeLimit) forgot(n *fileNode) {
	if n.forgotten.Swap(true) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.live--
}

// pick takes from the queue, oldest first, the nodes to prune so that
// about a tenth below the bound stay: not forgotten, not used since they
// were queued, not open. It looks at each queued node at most once.
func (l *nodeLimit) pick() []*fileNode {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.added = 0
	want := l.live - l.max*9/10
	var batch []*fileNode
	for seen, n := 0, len(l.queue)-l.head; seen < n && len(batch) < want; seen++ {
		nd := l.queue[l.head]
		l.queue[l.head] = nil
		l.head++
		switch {
		case nd.forgotten.Load():
			nd.queued.Store(false)
		case nd.recent.Swap(false) || nd.opens.Load() > 0:
			l.queue = append(l.queue, nd)
		default:
			nd.queued.Store(false)
			batch = append(batch, nd)
		}
	}
	// Give the consumed front of the slice back once it is half of it.
	if l.head > len(l.queue)/2 {
		l.queue = append([]*fileNode(nil), l.queue[l.head:]...)
		l.head = 0
	}
	return batch
}

// Live returns the file nodes made and not yet forgotten by the kernel.
func (l *nodeLimit) Live() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live
}

// kernelPruner asks the kernel itself to forget nodes.
type kernelPruner struct{ m *shared }

// pruneBatch is the most node IDs one prune notification carries.
const pruneBatch = 1024

func (k kernelPruner) prune(nodes []*fileNode) {
	if k.m.prune.Load() {
		nodes = k.notifyPrune(nodes)
	}
	for _, nd := range nodes {
		name, parent := nd.Parent()
		if parent == nil {
			// Never attached, or already gone from the tree.
			k.m.nodes.forgot(nd)
			continue
		}
		// ENOENT: the kernel has no such dentry any more; it forgets
		// the inode by itself then.
		if errno := parent.NotifyDelete(name, &nd.Inode); errno != 0 && errno != syscall.ENOENT {
			k.m.log.Debug("delete notification", "path", nd.path, "err", errno)
		}
	}
}

// notifyPrune sends prune notifications for nodes, pruneBatch at a time,
// and returns the nodes still to forget: none, or, when the kernel turns
// out not to take them (before Linux 6.18, FUSE 7.45), those from the
// refused batch on, with prune notifications switched off for good.
func (k kernelPruner) notifyPrune(nodes []*fileNode) []*fileNode {
	for len(nodes) > 0 {
		n := min(len(nodes), pruneBatch)
		in := make([]*fs.Inode, n)
		for i, nd := range nodes[:n] {
			in[i] = &nd.Inode
		}
		switch errno := nodes[0].NotifyPrune(in); errno {
		case 0:
		case syscall.ENOSYS:
			k.m.prune.Store(false)
			return nodes
		default:
			k.m.log.Debug("prune notification", "err", errno)
		}
		nodes = nodes[n:]
	}
	return nil
}
