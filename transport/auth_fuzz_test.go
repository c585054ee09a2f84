package transport

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"
)

// FuzzAuthenticate holds JWT.Authenticate to its promises on tokens signed
// with the server's secret whose header and claims are anything at all (a
// token whose signature fails never reaches the parsers): it never
// panics, it refuses only unauthenticated or token_expired, and what it
// admits is what a plain JSON reading of the claims says, so that no
// second reading of a token (the deny list's, a scope's parameters, a
// proxy's) names another subject or grants other collections: the
// algorithm is HS256, sub and jti are the claims' own strings and can be
// named by the deny list, read and write are the claims' arrays of valid
// patterns, exp is a number after now, nbf (if any) a number not after
// it, and there is no aud (the server has no audience).
func FuzzAuthenticate(f *testing.F) {
	now := time.Unix(1_764_720_000, 0)
	j, err := NewJWT(testSecret, func() time.Time { return now })
	if err != nil {
		f.Fatal(err)
	}
	hs256 := `{"alg":"HS256","typ":"JWT"}`
	for _, seed := range [][2]string{
		{hs256, `{"sub":"alice","exp":1764723600,"read":["a.*"],"write":["a.b"]}`},
		{hs256, `{"sub":"alice","exp":1764723600,"jti":"t1","cvg_scopes":{"a.*":"owner == $sub"}}`},
		{hs256, `{"sub":"alice","Sub":"bob","exp":1764723600}`},
		{hs256, `{"sub":"alice","sub":"bob","exp":1764723600,"read":["*"],"read":["x"]}`},
		{hs256, `{"sub":"alice","exp":"1764723600"}`},
		{hs256, `{"sub":"alice","exp":1764723600,"nbf":1.5e9,"iat":-1}`},
		{hs256, `{"sub":"a\u0000b","exp":1764723600}`},
		{hs256, `{"sub":"alice","exp":1e300}`},
		{`{"alg":"none"}`, `{"sub":"alice","exp":1764723600}`},
		{`{"alg":"HS256","alg":"RS256"}`, `{"sub":"alice","exp":1764723600}`},
		{`{"alg":"hs256"}`, `{"sub":"alice","exp":1764723600}`},
		{hs256, `{"sub":"alice","sub":null,"exp":1764723600}`},
		{hs256, "{\"sub\":\"al\xe9x\",\"exp\":1764723600}"},
		{hs256, `{"sub":"alice","exp":1764723600,"nbf":1e19}`},
		{hs256, `{"sub":"alice","exp":1764723600,"aud":"billing"}`},
	} {
		f.Add([]byte(seed[0]), []byte(seed[1]))
	}
	f.Fuzz(func(t *testing.T, header, claims []byte) {
		enc := base64.RawURLEncoding
		unsigned := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
		mac := hmac.New(sha256.New, testSecret)
		mac.Write([]byte(unsigned))
		token := unsigned + "." + enc.EncodeToString(mac.Sum(nil))

		p, err := j.Authenticate(context.Background(), token)
		if err != nil {
			if !errors.Is(err, ErrUnauthenticated) && !errors.Is(err, ErrTokenExpired) {
				t.Fatalf("Authenticate(%s): undocumented error %v", token, err)
			}
			return
		}
		var h map[string]any
		if err := json.Unmarshal(header, &h); err != nil || h["alg"] != "HS256" {
			t.Fatalf("admitted a token whose header %q reads %v, %v", header, h, err)
		}
		var all map[string]any
		if err := json.Unmarshal(claims, &all); err != nil {
			t.Fatalf("admitted claims %q that do not read as JSON: %v", claims, err)
		}
		if sub, _ := all["sub"].(string); sub == "" || p.Subject != sub {
			t.Fatalf("claims %q: subject %q, the claims say %v", claims, p.Subject, all["sub"])
		}
		if jti, _ := all["jti"].(string); p.TokenID != jti {
			t.Fatalf("claims %q: token id %q, the claims say %v", claims, p.TokenID, all["jti"])
		}
		if err := nameable(p.Subject, p.TokenID); err != nil {
			t.Fatalf("claims %q: admitted a principal the deny list cannot name: %v", claims, err)
		}
		for name, got := range map[string][]string{"read": p.Read, "write": p.Write} {
			var want []string
			if list, ok := all[name].([]any); ok {
				for _, v := range list {
					s, _ := v.(string)
					want = append(want, s)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("claims %q: %s %q, the claims say %v", claims, name, got, all[name])
			}
			for _, pat := range got {
				if err := ValidatePattern(pat); err != nil {
					t.Fatalf("claims %q: admitted pattern %q: %v", claims, pat, err)
				}
			}
		}
		if nbf, ok := all["nbf"]; ok {
			if n, isNumber := nbf.(float64); !isNumber || n > float64(now.Unix()) {
				t.Fatalf("claims %q: admitted with nbf %v (now %v)", claims, nbf, now)
			}
		}
		if aud, ok := all["aud"]; ok {
			t.Fatalf("claims %q: admitted with aud %v by a server without an audience", claims, aud)
		}
		exp, ok := all["exp"].(float64)
		if !ok || !p.Expires.After(now) || float64(now.Unix()) >= exp {
			t.Fatalf("claims %q: admitted with exp %v (expires %v, now %v)", claims, all["exp"], p.Expires, now)
		}
		for pat := range p.Scopes {
			if err := ValidatePattern(pat); err != nil {
				t.Fatalf("claims %q: admitted scope pattern %q: %v", claims, pat, err)
			}
		}
	})
}
