package stores

// BumpTries bounds a compare-and-set bump (NextEpoch) in a store shared
// by several instances: the bump reads the counter, computes its next
// value and sets it only if the counter is still the value read. When
// another bump came in between it reads again: as long as each read finds
// the counter moved (another bump succeeded, so a burst of bumps from many
// instances all succeed), and up to BumpTries reads that find it where the
// last one did. The Redis and DynamoDB stores both follow this rule
// through BumpStalls.
const BumpTries = 10

// BumpStalls counts the reads of a compare-and-set loop that found the
// value where the read before did. The zero value is ready.
type BumpStalls struct {
	last  string
	reads int
	n     int
}

// Read notes a read of the value, raw (any string that tells one value
// from another, "" included), and reports whether the loop should give up:
// BumpTries reads found it where the read before did.
func (s *BumpStalls) Read(raw string) bool {
	if s.reads > 0 && raw == s.last {
		s.n++
	}
	s.reads++
	s.last = raw
	return s.n >= BumpTries
}
