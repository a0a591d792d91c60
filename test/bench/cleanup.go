// cleanup.go keeps the list of things to undo (mounts, processes, files),
// so that an error or Ctrl-C anywhere still leaves nothing behind.

package main

import (
	"sync"
)

// closer undoes one thing once; later calls return the first result.
type closer struct {
	name string
	once sync.Once
	fn   func() error
	err  error
}

func (c *closer) close() error {
	c.once.Do(func() { c.err = c.fn() })
	return c.err
}

// cleanups is a stack of closers, run last-in first-out by closeAll.
// Figures close what they made as soon as they are done; closeAll then
// finds those already closed and only undoes what an error left.
type cleanups struct {
	mu   sync.Mutex // guards list
	list []*closer
}

// add registers fn under name and returns its closer.
func (cs *cleanups) add(name string, fn func() error) *closer {
	c := &closer{name: name, fn: fn}
	cs.mu.Lock()
	cs.list = append(cs.list, c)
	cs.mu.Unlock()
	return c
}

// closeAll closes every closer, newest first, and reports each failure.
func (cs *cleanups) closeAll(logf func(string, ...any)) {
	cs.mu.Lock()
	list := cs.list
	cs.list = nil
	cs.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		if err := list[i].close(); err != nil {
			logf("cleanup %s: %v", list[i].name, err)
		}
	}
}
