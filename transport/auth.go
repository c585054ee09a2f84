package transport

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/transport/proto"
)

// Authentication errors. An Authorizer wraps them; the server answers
// ErrTokenExpired with token_expired and the others with unauthenticated.
var (
	// ErrUnauthenticated means the token is missing, malformed or forged.
	ErrUnauthenticated = errors.New("transport: unauthenticated")
	// ErrTokenExpired means the token's expiry has passed.
	ErrTokenExpired = errors.New("transport: token expired")
)

// DemoCollection is the one collection anonymous clients may read and write
// when the server runs with Config.Demo.
const DemoCollection = "demo.todos"

// Authorizer turns a bearer token into a Principal. The server calls it for
// every HTTP request and for every live session's hello; an empty token
// means the client sent none.
type Authorizer interface {
	Authenticate(ctx context.Context, token string) (Principal, error)
}

// Principal is an authenticated subject and the collections it may use.
type Principal struct {
	// Subject identifies the user or service; "" for an anonymous client.
	Subject string
	// Read and Write are collection patterns: an exact name, a prefix
	// ending in ".*" (matching names below it, not the prefix itself), or
	// "*" for every collection.
	Read, Write []string
	// Expires is when the token stops being valid; zero for never. A live
	// session ends with token_expired at that time.
	Expires time.Time
	// TokenID is the token's id (its jti claim), "" when it has none: the
	// deny list may name it.
	TokenID string
	// Claims holds every claim of the token, as encoding/json decodes
	// them with numbers as json.Number, for the parameters of scopes
	// ({"$": "claims.teams"}). Nil for the anonymous principal.
	Claims map[string]any
	// Scopes are the scopes the token imposes (its cvg_scopes claim):
	// collection pattern → predicate, unbound. Every one whose pattern
	// matches a collection narrows what p reads and writes there
	// (scopes.go).
	Scopes map[string]*scope.Pred
}

// CanRead reports whether p may pull and subscribe to collection. No
// pattern grants a reserved collection (proto.Reserved).
func (p Principal) CanRead(collection string) bool {
	return !proto.Reserved(collection) && matchAny(p.Read, collection)
}

// CanWrite reports whether p may push changes to collection. No pattern
// grants a reserved collection (proto.Reserved).
func (p Principal) CanWrite(collection string) bool {
	return !proto.Reserved(collection) && matchAny(p.Write, collection)
}

func matchAny(patterns []string, collection string) bool {
	for _, p := range patterns {
		if MatchPattern(p, collection) {
			return true
		}
	}
	return false
}

// MatchPattern reports whether a collection pattern matches collection
// (crdt.MatchPattern).
func MatchPattern(pattern, collection string) bool { return crdt.MatchPattern(pattern, collection) }

// ValidatePattern checks a collection pattern (crdt.ValidatePattern).
func ValidatePattern(pattern string) error { return crdt.ValidatePattern(pattern) }

// anonymous is the principal of a client without a token in demo mode.
var anonymous = Principal{Read: []string{DemoCollection}, Write: []string{DemoCollection}}

// JWT authenticates HS256-signed JSON Web Tokens with the claims of
// docs/protocol.md: sub, exp (required), read and write.
type JWT struct {
	secret   []byte
	now      func() time.Time
	audience string
	issuer   string
	parser   *jwt.Parser
}

// MinSecretBytes is the shortest secret NewJWT accepts.
const MinSecretBytes = 16

// JWTConfig configures a JWT authorizer (NewJWTWith).
type JWTConfig struct {
	// Secret is the HS256 key, at least MinSecretBytes bytes; required.
	Secret []byte
	// Now reads the clock; nil means time.Now.
	Now func() time.Time
	// Audience is the server's name in tokens' aud claim. Set, a token
	// must name it in its aud (a string or an array holding it); empty, a
	// token with any aud is refused, since it was minted for someone else
	// (RFC 7519, 4.1.3). Tokens IssueToken signs carry it.
	Audience string
	// Issuer is the iss claim tokens must carry exactly; empty means iss
	// is not checked. Tokens IssueToken signs carry it.
	Issuer string
}

// NewJWT returns a JWT authorizer with secret and neither an audience nor
// an issuer. now reads the clock (nil means time.Now).
func NewJWT(secret []byte, now func() time.Time) (*JWT, error) {
	return NewJWTWith(JWTConfig{Secret: secret, Now: now})
}

// NewJWTWith returns a JWT authorizer configured by cfg.
func NewJWTWith(cfg JWTConfig) (*JWT, error) {
	if len(cfg.Secret) < MinSecretBytes {
		return nil, fmt.Errorf("jwt: secret of %d bytes, need at least %d", len(cfg.Secret), MinSecretBytes)
	}
	for name, v := range map[string]string{"audience": cfg.Audience, "issuer": cfg.Issuer} {
		if strings.ContainsFunc(v, unicode.IsControl) || !utf8.ValidString(v) {
			return nil, fmt.Errorf("jwt: %s %q: want UTF-8 without control characters", name, v)
		}
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), // no "none", no RS/HS confusion
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(now),
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	return &JWT{
		secret:   append([]byte(nil), cfg.Secret...),
		now:      now,
		audience: cfg.Audience,
		issuer:   cfg.Issuer,
		parser:   jwt.NewParser(opts...),
	}, nil
}

type claims struct {
	jwt.RegisteredClaims
	Read   []string                   `json:"read,omitempty"`
	Write  []string                   `json:"write,omitempty"`
	Scopes map[string]json.RawMessage `json:"cvg_scopes,omitempty"`
}

// parseScopes reads a cvg_scopes claim: pattern → scope, each in the
// JSON array form of a predicate or its text form (scope.Parse).
func parseScopes(raw map[string]json.RawMessage) (map[string]*scope.Pred, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	out := make(map[string]*scope.Pred, len(raw))
	for pattern, v := range raw {
		if err := ValidatePattern(pattern); err != nil {
			return nil, fmt.Errorf("%s: %w", proto.ClaimScopes, err)
		}
		d := json.NewDecoder(bytes.NewReader(v))
		d.UseNumber()
		var val any
		if err := d.Decode(&val); err != nil {
			return nil, fmt.Errorf("%s %s: %w", proto.ClaimScopes, pattern, err)
		}
		var p *scope.Pred
		var err error
		if text, ok := val.(string); ok {
			p, err = scope.Parse(text)
		} else {
			p, err = scope.FromValue(val)
		}
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", proto.ClaimScopes, pattern, err)
		}
		out[pattern] = p // nil ("all"): narrows nothing
	}
	return out, nil
}

// Authenticate verifies token and returns its principal.
func (j *JWT) Authenticate(_ context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, fmt.Errorf("%w: no token", ErrUnauthenticated)
	}
	if !j.signed(token) {
		return Principal{}, fmt.Errorf("%w: token signature is invalid", ErrUnauthenticated)
	}
	if err := noCritical(token); err != nil {
		return Principal{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	// The claims as they are, checked before the parser judges the times
	// it reads from them.
	all, err := numericTimes(token)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if err := j.recipient(all); err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	var c claims
	_, err = j.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return j.secret, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Principal{}, fmt.Errorf("%w: %v", ErrTokenExpired, err)
	case err != nil:
		return Principal{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	case c.Subject == "":
		return Principal{}, fmt.Errorf("%w: token without a subject", ErrUnauthenticated)
	}
	if err := nameable(c.Subject, c.ID); err != nil {
		return Principal{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	for name := range all {
		if read := foldsTo(name); read != "" {
			return Principal{}, fmt.Errorf("%w: claim %q is read as %q", ErrUnauthenticated, name, read)
		}
	}
	for _, p := range append(append([]string(nil), c.Read...), c.Write...) {
		if err := ValidatePattern(p); err != nil {
			return Principal{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
		}
	}
	scopes, err := parseScopes(c.Scopes)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	return Principal{Subject: c.Subject, Read: c.Read, Write: c.Write, Expires: c.ExpiresAt.Time,
		TokenID: c.ID, Claims: all, Scopes: scopes}, nil
}

// errForeign marks a token signed with the secret but minted for another
// recipient: its aud or iss is not this server's. The server says so to
// the client (its holder has a valid signature, and the operator a
// setting to fix), where other refusals say only unauthenticated.
var errForeign = errors.New("token for another recipient")

// recipient checks a token's aud and iss claims against the server's:
// with an audience, aud must be it or an array holding it; without one, a
// token naming any aud was minted for someone else (RFC 7519, 4.1.3),
// whatever its other claims say. With an issuer, iss must be it. (The
// parser checks them again, from the claims it decodes.)
func (j *JWT) recipient(all map[string]any) error {
	aud, has := all["aud"]
	switch {
	case has && j.audience == "":
		return fmt.Errorf("%w: aud %v, and this server has no audience (--audience)", errForeign, aud)
	case j.audience != "" && !names(aud, j.audience):
		return fmt.Errorf("%w: aud %v does not name this server's audience %q", errForeign, aud, j.audience)
	}
	if iss, ok := all["iss"]; j.issuer != "" && (!ok || iss != j.issuer) {
		return fmt.Errorf("%w: iss %v is not this server's issuer %q", errForeign, iss, j.issuer)
	}
	return nil
}

// names reports whether aud, a claim as encoding/json decodes it, is
// name or an array of strings holding it.
func names(aud any, name string) bool {
	switch a := aud.(type) {
	case string:
		return a == name
	case []any:
		found := false
		for _, x := range a {
			s, ok := x.(string)
			if !ok {
				return false
			}
			found = found || s == name
		}
		return found
	}
	return false
}

// readClaims are the names of the claims Authenticate reads into a
// Principal: the JSON names of the fields of claims, its embedded
// registered claims' included, so that a claim added there is covered.
var readClaims = jsonNames(reflect.TypeFor[claims]())

// jsonNames returns the JSON names of struct type t's fields, those of
// its embedded structs included.
func jsonNames(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			names = append(names, jsonNames(f.Type)...)
			continue
		}
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// foldsTo returns the claim of readClaims that name is read as though it
// is not that name, "" when none. The JWT parser decodes claims with
// encoding/json, which matches a field's name in any case (Unicode's
// simple folding: "Write", "ſub"), and the later of two such keys wins: a
// token with a further claim "Write", or "ſub" beside its sub, would
// grant writing or name another subject. Authenticate refuses such a
// token and IssueToken such a claim.
func foldsTo(name string) string {
	for _, r := range readClaims {
		if name != r && strings.EqualFold(name, r) {
			return r
		}
	}
	return ""
}

// signed reports whether token's last part is the HMAC-SHA256 of the rest
// under the secret. Authenticate checks it first, since the JWT parser
// decodes a token's header and claims before it checks the signature:
// that costs the server many times what sending the token costs, and
// requests pay it before their rate is counted (the rate's key is the
// token's subject). So a token not signed here costs one HMAC over its
// bytes, at most MaxHeaderBytes, and is refused unauthenticated. The
// parser checks the signature again, with the algorithm the header names
// (HS256 alone is valid).
func (j *JWT) signed(token string) bool {
	dot := strings.LastIndexByte(token, '.')
	if dot < 0 {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(token[dot+1:])
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, j.secret)
	mac.Write([]byte(token[:dot]))
	return hmac.Equal(mac.Sum(nil), sig)
}

// noCritical refuses a token whose JWS header has crit (RFC 7515,
// 4.1.11): the extensions it lists must be understood and processed by
// the recipient, else the token rejected (RFC 7519, 7.2), and this server
// understands none. The JWT parser reads no crit, so without this a token
// its issuer marked as read some other way was admitted as a plain one.
// The header's other parameters (typ, kid) are not read.
func noCritical(token string) error {
	head, _, ok := strings.Cut(token, ".")
	if !ok {
		return errors.New("token is not three parts")
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return fmt.Errorf("token header: %v", err)
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(raw, &h); err != nil {
		return fmt.Errorf("token header: %v", err)
	}
	if _, ok := h["crit"]; ok {
		return errors.New("token header has crit: this server understands no JWS extension")
	}
	return nil
}

// nameable checks that the deny list can name a token's subject and its
// token id (when it has one): a deny record's id is DenySubject or
// DenyTokenID and the name, and must be a record id (crdt.ValidateID: 1 to
// crdt.MaxIDBytes bytes of UTF-8, no control characters). A principal
// the deny list cannot name could never be revoked, so such a token is
// not admitted (docs/protocol.md, section 4).
func nameable(subject, tokenID string) error {
	if err := crdt.ValidateID(DenySubject + subject); err != nil {
		return fmt.Errorf("the deny list cannot name the subject: %w", err)
	}
	if tokenID == "" {
		return nil
	}
	if err := crdt.ValidateID(DenyTokenID + tokenID); err != nil {
		return fmt.Errorf("the deny list cannot name the token id: %w", err)
	}
	return nil
}

// numericTimes checks that the time claims of a token whose signature
// is valid are JSON numbers, as RFC 7519 says: the JWT library also
// accepts a numeric string ("exp": "9999999999"), which no issuer of ours
// writes. And that they are seconds an int64 holds: the library converts
// them as they are, and one past that range wraps to the far past (an nbf
// of 1e19 would admit the token at once). The claims must be UTF-8 and
// name each claim once. It returns every claim of the token.
func numericTimes(token string) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("token is not three parts")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("token payload: %v", err)
	}
	if !utf8.Valid(payload) {
		// JSON is UTF-8 (RFC 8259): encoding/json would read each byte
		// that is not as U+FFFD, another subject than the browser client
		// reads from the same token (none: its decoder is strict).
		return nil, errors.New("token payload: not UTF-8")
	}
	// Numbers as their text (json.Number): scopes bind them by the number
	// rule of JSON documents (crdt.AppendJSONNumber), as the token's
	// cvg_scopes and the rules file, so that an integer past 2^53 (a
	// 64-bit id) is itself, not the float64 nearest to it, another's.
	var all map[string]any
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	if err := d.Decode(&all); err != nil {
		return nil, fmt.Errorf("token payload: %v", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("token payload: data after the claims")
	}
	if name := twice(payload); name != "" {
		return nil, fmt.Errorf("claim %q is named twice", name)
	}
	for _, name := range []string{"exp", "nbf", "iat"} {
		switch v := all[name].(type) {
		case string:
			return nil, fmt.Errorf("claim %q is not a number", name)
		case json.Number:
			f, err := v.Float64()
			if err != nil || !(f >= math.MinInt64 && f < math.MaxInt64) { // MaxInt64 rounds up to 2^63, past the range
				return nil, fmt.Errorf("claim %q: %s seconds is out of range", name, v)
			}
		}
	}
	return all, nil
}

// twice returns a claim name that the claims object payload (valid JSON)
// holds twice, "" when none. RFC 7519 (4) lets a parser read the last of
// two, but the server's fields do not all: a null keeps the string read
// before it, so the server and the clients (which read the last) would
// see two subjects. Such a token is refused.
func twice(payload []byte) string {
	d := json.NewDecoder(bytes.NewReader(payload))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	seen := map[string]bool{}
	for d.More() {
		t, err := d.Token()
		name, ok := t.(string)
		if err != nil || !ok {
			return ""
		}
		if seen[name] {
			return name
		}
		seen[name] = true
		var skip json.RawMessage
		if d.Decode(&skip) != nil {
			return ""
		}
	}
	return ""
}

// Issue signs a token for subject with the given patterns, valid for ttl.
func (j *JWT) Issue(subject string, read, write []string, ttl time.Duration) (string, error) {
	return j.IssueToken(TokenSpec{Subject: subject, Read: read, Write: write, TTL: ttl})
}

// TokenSpec is what IssueToken signs.
type TokenSpec struct {
	// Subject is the sub claim; required.
	Subject string
	// Read and Write are collection patterns (Principal).
	Read, Write []string
	// TTL is how long the token is valid; required.
	TTL time.Duration
	// ID is the jti claim, which the deny list may name; "" for none.
	ID string
	// Claims are further claims, for scope parameters ({"$":
	// "claims.teams"}). They may not set the claims the fields above set,
	// nor exp, iat, nbf, aud, iss or cvg_scopes.
	Claims map[string]any
	// Scopes is the cvg_scopes claim: collection pattern → scope, written
	// in its text form.
	Scopes map[string]*scope.Pred
}

// registered are the claims IssueToken sets itself (aud and iss from the
// JWT's configuration).
var registered = []string{"sub", "exp", "iat", "nbf", "jti", "aud", "iss", "read", "write", proto.ClaimScopes}

// IssueToken signs a token as spec says.
func (j *JWT) IssueToken(spec TokenSpec) (string, error) {
	if spec.Subject == "" {
		return "", errors.New("jwt: empty subject")
	}
	if err := nameable(spec.Subject, spec.ID); err != nil {
		return "", fmt.Errorf("jwt: %w", err)
	}
	if spec.TTL <= 0 {
		return "", fmt.Errorf("jwt: ttl %v must be positive", spec.TTL)
	}
	for _, p := range append(append([]string(nil), spec.Read...), spec.Write...) {
		if err := ValidatePattern(p); err != nil {
			return "", fmt.Errorf("jwt: %w", err)
		}
	}
	mc := jwt.MapClaims{}
	for name, v := range spec.Claims {
		if slices.Contains(registered, name) {
			return "", fmt.Errorf("jwt: claim %q is set by the token's own fields", name)
		}
		if read := foldsTo(name); read != "" {
			return "", fmt.Errorf("jwt: claim %q would be read as %q", name, read)
		}
		mc[name] = v
	}
	now := j.now()
	mc["sub"] = spec.Subject
	mc["iat"] = jwt.NewNumericDate(now)
	mc["exp"] = jwt.NewNumericDate(now.Add(spec.TTL))
	if spec.ID != "" {
		mc["jti"] = spec.ID
	}
	if j.audience != "" {
		mc["aud"] = j.audience
	}
	if j.issuer != "" {
		mc["iss"] = j.issuer
	}
	if len(spec.Read) > 0 {
		mc["read"] = spec.Read
	}
	if len(spec.Write) > 0 {
		mc["write"] = spec.Write
	}
	if len(spec.Scopes) > 0 {
		sc := map[string]string{}
		for pattern, p := range spec.Scopes {
			if err := ValidatePattern(pattern); err != nil {
				return "", fmt.Errorf("jwt: %s: %w", proto.ClaimScopes, err)
			}
			sc[pattern] = p.String()
		}
		mc[proto.ClaimScopes] = sc
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, mc).SignedString(j.secret)
	if err != nil {
		return "", fmt.Errorf("jwt: sign: %w", err)
	}
	return s, nil
}
