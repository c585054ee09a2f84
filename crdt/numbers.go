package crdt

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// The number rule of JSON documents (the server's rules file: values in
// scopes, the defaults of migrations). The browser client reads a number
// as JavaScript does, as a float64, and encodes it as an integer when it
// is a safe integer (Number.isSafeInteger) that is not -0, else as a
// float. The server reads the same numbers by the same rule, from their
// text, so both sides store the same bytes for them; the text also lets
// it read an integer written without fraction or exponent beyond that
// range exactly (which a float64 cannot).

// MaxSafeInteger is the largest integer a float64 holds with every
// integer below it: JavaScript's Number.MAX_SAFE_INTEGER, 2^53−1.
const MaxSafeInteger = 1<<53 - 1

// AppendJSONNumber appends the field value of the JSON number written as
// s (its text, as json.Number holds it): an integer when it is written
// without fraction or exponent (any integer CBOR holds without a tag),
// else as AppendJSONFloat appends its float64. A malformed number or one
// out of range is an error wrapping ErrInvalid.
func AppendJSONNumber(b []byte, s string) ([]byte, error) {
	if !strings.ContainsAny(s, ".eE") {
		n, ok := new(big.Int).SetString(s, 10)
		if !ok {
			return nil, fmt.Errorf("%w: bad number %q", ErrInvalid, s)
		}
		return AppendBigInt(b, n)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: bad number %q", ErrInvalid, s)
	}
	return AppendJSONFloat(b, f), nil
}

// AppendJSONFloat appends f as JSON sees it: a whole number within
// ±MaxSafeInteger that is not -0 as an integer, any other number as a
// float in its shortest exact width (the canonical encoding).
func AppendJSONFloat(b []byte, f float64) []byte {
	if f == math.Trunc(f) && math.Abs(f) <= MaxSafeInteger && !(f == 0 && math.Signbit(f)) {
		if f < 0 {
			return appendHead(b, majorNegint, uint64(-f)-1)
		}
		return appendHead(b, majorUint, uint64(f))
	}
	return appendFloat(b, f)
}

var (
	cborMaxUint = new(big.Int).SetUint64(math.MaxUint64)
	cborMinInt  = new(big.Int).Neg(new(big.Int).Add(cborMaxUint, big.NewInt(1)))
)

// AppendBigInt appends n, an integer CBOR holds without a tag (−2^64 to
// 2^64−1); another is an error wrapping ErrInvalid.
func AppendBigInt(b []byte, n *big.Int) ([]byte, error) {
	if n.Cmp(cborMaxUint) > 0 || n.Cmp(cborMinInt) < 0 {
		return nil, fmt.Errorf("%w: integer %s out of CBOR's range", ErrInvalid, n)
	}
	if n.Sign() >= 0 {
		return appendHead(b, majorUint, n.Uint64()), nil
	}
	m := new(big.Int).Neg(n)
	return appendHead(b, majorNegint, m.Sub(m, big.NewInt(1)).Uint64()), nil
}
