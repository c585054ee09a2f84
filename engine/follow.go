package engine

import (
	"context"
	"fmt"

	"github.com/convergo/convergo/crdt/scope"
)

// Follow reads collection's change log from cursor from and keeps
// reading as the collection advances: it calls fn with every non-empty
// page after from, in log order, then waits for the next change and
// calls fn with what follows, until ctx is done (it returns ctx's error),
// fn returns an error (it returns that error), the engine closes
// (ErrClosed) or a pull fails. It is the subscribe-then-pull loop every
// reader needs: it subscribes before its first pull, so no change slips
// between the two, and a burst of changes costs one pull, not one per
// change.
//
// Each page's Next is the cursor to resume from: a program that keeps
// it durably with what it did with the page follows again from there
// after a restart. A cursor of another history (the store was replaced
// or restored) ends Follow with an error wrapping ErrReset; following
// again from the zero Cursor reads every record once more.
//
// fn runs on Follow's goroutine; while it runs, newer changes wait.
func (e *Engine) Follow(ctx context.Context, collection string, from Cursor, fn func(Page) error) error {
	return e.FollowScoped(ctx, collection, from, nil, fn)
}

// FollowScoped is Follow of a reader whose scope is s (PullScoped): fn
// gets every page that holds entries or leaves. A nil s is Follow.
func (e *Engine) FollowScoped(ctx context.Context, collection string, from Cursor, s *scope.Pred, fn func(Page) error) error {
	sub, err := e.Subscribe(collection)
	if err != nil {
		return fmt.Errorf("follow %s: %w", collection, err)
	}
	defer sub.Close()
	cur := from
	for {
		for more := true; more; {
			page, err := e.PullScoped(ctx, collection, cur, PageLimit{}, s)
			if err != nil {
				return fmt.Errorf("follow %s: %w", collection, err)
			}
			if len(page.Entries) > 0 || len(page.Left) > 0 {
				if err := fn(page); err != nil {
					return err
				}
			}
			cur, more = page.Next, page.More
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-sub.C():
			if !ok {
				return fmt.Errorf("follow %s: %w", collection, ErrClosed)
			}
		}
	}
}
