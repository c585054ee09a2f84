package bolt

// DisableGroupCommit makes every Apply call commit its own transaction, to
// measure what group commit gains. Call it before the first Apply.
func DisableGroupCommit(s *Store) { s.groupChanges = 1 }

// Path returns the store's file, for tests that reopen it.
func (s *Store) Path() string { return s.db.Path() }
