package transport

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"

	"github.com/convergo/convergo/crdt"
)

// Seals let clients give the server back what it lost. Every record the
// server sends carries a seal: an HMAC, with a key kept outside the store,
// of the collection and the record's canonical bytes. After a reset that
// lost history, a client restores the records it holds as the server
// sealed them (POST /v2/restore); the server checks each seal and merges
// the record with its original stamps. Replica binding forbids pushing
// other replicas' stamps, and seals are how a client may still give them
// back: they prove the server once held exactly that record, so restoring
// one can bring back only what the server had, never something a client
// made up. A reader that may not write a collection can restore it too.

// sealBytes is the length of a seal: 128 bits of HMAC-SHA256.
const sealBytes = 16

// sealDomain separates seals from any other use of the key.
const sealDomain = "convergo/seal/v2\x00"

// sealer seals records with one key.
type sealer struct{ key []byte }

func newSealer(key []byte) (*sealer, error) {
	if len(key) == 0 {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
	}
	return &sealer{key: append([]byte(nil), key...)}, nil
}

// seal returns the seal of rec in collection.
func (s *sealer) seal(collection string, rec crdt.Record) []byte {
	return s.sealIn(sealDomain, collection, rec)
}

// sealAt returns the seal of rec served in schema version v of
// collection, whose current version is cur: at the current version the
// seal of rec; at an older one a seal of another domain that names the
// version, so a record served in one version cannot be restored as one
// of another (docs/design.md, "Schema versions").
func (s *sealer) sealAt(collection string, v, cur int, rec crdt.Record) []byte {
	if v == cur {
		return s.seal(collection, rec)
	}
	return s.sealIn(fmt.Sprintf("convergo/seal/v2/schema-%d\x00", v), collection, rec)
}

func (s *sealer) sealIn(domain, collection string, rec crdt.Record) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(domain))
	m.Write([]byte(collection))
	m.Write([]byte{0})
	m.Write(crdt.AppendRecord(nil, rec))
	return m.Sum(nil)[:sealBytes]
}

// seals returns the seals of records served in schema version v of
// collection (current version cur), in order.
func (s *sealer) seals(collection string, v, cur int, records []crdt.Record) [][]byte {
	if len(records) == 0 {
		return nil
	}
	out := make([][]byte, len(records))
	for i, r := range records {
		out[i] = s.sealAt(collection, v, cur, r)
	}
	return out
}

// valid reports whether seal is rec's, served in schema version v of
// collection (current version cur). A record restored at an older version
// may also carry the plain seal: it was served when that version was the
// current one (before the migration was installed).
func (s *sealer) valid(collection string, v, cur int, rec crdt.Record, seal []byte) bool {
	if hmac.Equal(s.seal(collection, rec), seal) {
		return true
	}
	return v != cur && hmac.Equal(s.sealAt(collection, v, cur, rec), seal)
}
