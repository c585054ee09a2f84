package crdt

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits on names. They keep keys safe for every store (Redis keys and hash
// tags, DynamoDB key attributes, bbolt buckets) and for logs.
const (
	MaxCollectionBytes = 128
	MaxReplicaBytes    = 64
	MaxIDBytes         = 512
	MaxFieldNameBytes  = 256
)

// ValidateCollection checks a collection name: 1 to MaxCollectionBytes of
// ASCII letters, digits, '_', '-' and '.', starting with a letter, digit or
// '_'. Dots let authorization grant prefixes such as "tenant42.*"; braces,
// colons, slashes, spaces and the like are refused so a name can never
// change the meaning of a store key.
func ValidateCollection(name string) error {
	if name == "" || len(name) > MaxCollectionBytes {
		return fmt.Errorf("%w: collection name must be 1 to %d bytes, got %d", ErrInvalid, MaxCollectionBytes, len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := isAlnum(c) || c == '_' || (i > 0 && (c == '-' || c == '.'))
		if !ok {
			return fmt.Errorf("%w: collection name %q has forbidden character %q at %d", ErrInvalid, name, charAt(name, i), i)
		}
	}
	return nil
}

// ValidateReplica checks a replica id: 1 to MaxReplicaBytes of ASCII
// letters, digits, '_' and '-'.
func ValidateReplica(id string) error {
	if id == "" || len(id) > MaxReplicaBytes {
		return fmt.Errorf("%w: replica id must be 1 to %d bytes, got %d", ErrInvalid, MaxReplicaBytes, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '_' && c != '-' {
			return fmt.Errorf("%w: replica id %q has forbidden character %q", ErrInvalid, id, charAt(id, i))
		}
	}
	return nil
}

// ValidateID checks a record id: 1 to MaxIDBytes of valid UTF-8 without
// control characters.
func ValidateID(id string) error { return validateText("record id", id, MaxIDBytes) }

// ValidateFieldName checks a field name with the rules of ValidateID and
// MaxFieldNameBytes.
func ValidateFieldName(name string) error { return validateText("field name", name, MaxFieldNameBytes) }

func validateText(what, s string, maxBytes int) error {
	if s == "" || len(s) > maxBytes {
		return fmt.Errorf("%w: %s must be 1 to %d bytes, got %d", ErrInvalid, what, maxBytes, len(s))
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, what)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: %s %q has control character %U", ErrInvalid, what, s, r)
		}
	}
	return nil
}

// charAt is the character of s that begins at byte i, as s holds it: all
// its bytes, or the byte alone where none begins there. A refusal names
// it so, never a byte of it read as a character of its own.
func charAt(s string, i int) string {
	_, n := utf8.DecodeRuneInString(s[i:])
	return s[i : i+n]
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// MatchPattern reports whether a collection pattern matches collection. A
// pattern is an exact collection name, a prefix ending in ".*" (matching
// the names below it, not the prefix itself), or "*" for every collection.
// Tokens grant collections by pattern, and quotas apply to them.
func MatchPattern(pattern, collection string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasSuffix(pattern, ".*"):
		prefix := pattern[:len(pattern)-1] // keep the dot
		return len(collection) > len(prefix) && strings.HasPrefix(collection, prefix)
	default:
		return pattern == collection
	}
}

// ValidatePattern checks a collection pattern (see MatchPattern).
func ValidatePattern(pattern string) error {
	if pattern == "*" {
		return nil
	}
	if err := ValidateCollection(strings.TrimSuffix(pattern, ".*")); err != nil {
		return fmt.Errorf("pattern %q: %w", pattern, err)
	}
	return nil
}
