package stores

import "sync"

// Watchers is a registry of Watch callbacks that implementations embed or
// hold to implement Watch. Its zero value is ready to use.
type Watchers struct {
	mu     sync.Mutex
	next   int
	fns    map[int]func(Notification)
	closed bool
}

// Add registers fn and returns the function that removes it.
func (w *Watchers) Add(fn func(Notification)) (stop func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return func() {}
	}
	if w.fns == nil {
		w.fns = map[int]func(Notification){}
	}
	id := w.next
	w.next++
	w.fns[id] = fn
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.fns, id)
	}
}

// Notify calls every registered function with n.
func (w *Watchers) Notify(n Notification) {
	w.mu.Lock()
	fns := make([]func(Notification), 0, len(w.fns))
	for _, fn := range w.fns {
		fns = append(fns, fn)
	}
	w.mu.Unlock()
	for _, fn := range fns {
		fn(n)
	}
}

// Close removes every function; later Adds register nothing.
func (w *Watchers) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	w.fns = nil
}
