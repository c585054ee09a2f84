package stores

import "context"

// Usage is what a collection holds: its records (tombstones included) and
// the sum of their encoded sizes (len of crdt.EncodeRecord of each).
type Usage struct {
	Records int64
	Bytes   int64
}

// Usager is implemented by stores that keep each collection's Usage up to
// date with every Apply, in the same atomic step, so that reading it costs
// one small read. The engine enforces collection quotas only on such
// stores (engine.Config.Quotas); a server configured with quotas on a store
// without it refuses to start.
type Usager interface {
	// Usage returns collection's usage; zero for a collection never
	// written.
	Usage(ctx context.Context, collection string) (Usage, error)
}
