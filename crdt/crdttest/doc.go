// Package crdttest is Convergo's proof kit: rapid generators of stamps,
// values, records and changes; a reference model of what merging a set of
// changes must give; and a convergence checker. Stores run it through
// stores/storetest (storetest.Converge drives an engine on the store with
// these generators); applications use it to state their own properties
// ("whatever my users do offline, every device ends equal") in a few
// lines:
//
//	func TestDevicesConverge(t *testing.T) {
//		crdttest.Check(t, func(t *rapid.T) {
//			changes := crdttest.Changes("todos").Draw(t, "changes")
//			a, b := crdttest.Replica{}, crdttest.Replica{}
//			a.Apply(changes...)
//			b.Apply(crdttest.Shuffle(changes).Draw(t, "order")...)
//			crdttest.Converged(t, crdttest.Reference(changes), a, b)
//		})
//	}
//
// # The generators
//
// A Space is the small world the generators draw from: a few collections,
// record ids, field names, replica ids and values, and wall times of a few
// milliseconds, so that changes collide on records and fields and stamps
// tie often (equal stamps from two writers sharing a replica id included).
// Records and changes mix set fields, unsets (a field with no value) and
// deletes (a delete stamp, alone or with fields). DefaultSpace serves the
// package-level functions.
//
// # The reference model
//
// Reference computes, naively and apart from crdt.Record.Merge, what a
// replica must hold after every change of a set, in any order: per field
// the write with the largest stamp (at equal stamps an unset beats a
// value, else the larger value bytes), per record the largest delete
// stamp, and only the fields stamped after it.
//
// # The checker
//
// Converged compares replicas with the reference and says which rule a
// difference breaks; Diff does the same without a testing.TB. Check runs
// a rapid property without writing failure files into the caller's tree:
// a failure prints the -rapid.seed that reproduces it.
package crdttest
