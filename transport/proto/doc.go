// Package proto is the Convergo sync protocol of docs/protocol.md, declared
// once: the version, paths, headers, error codes and their HTTP statuses,
// push statuses, message types, the wire forms of every request, answer and
// live message, the default limits and the timings both sides keep.
//
// The server (package transport) and the Go client (transport/client) both
// use it, and it imports only crdt and the CBOR codec, so a client does not
// link the server. JavaScript gets the same constants from the generated
// files crdt/testdata/protocol.json and jsclient/src/constants.js (with
// jsclient/src/model.js, what the client's main entry needs of them), which
// `go test ./transport/proto -update` writes from Constants; the test fails
// when either is stale, and the JS tests check the JS copy against the JSON.
//
// # Envelopes and what they carry
//
// Envelopes (requests, answers, live messages) are CBOR maps with small
// integer keys. They are decoded with crdt.UnmarshalEnvelope: a key the
// receiver does not know is skipped, so a later revision may add keys. The
// records and changes they carry are decoded by crdt's strict decoders.
//
// # Pushes are lenient per change
//
// PushRequest decodes each change on its own: a change whose bytes are a
// well-formed CBOR item but not a valid change (a bad name, a stamp out of
// range, an oversized record, a map of the wrong shape) is left out of
// Changes and its error recorded at its index in Refused, so the server
// refuses that change alone. Only a body whose framing is broken fails.
//
// # Compact stamps
//
// Pull answers, changes messages and push bodies are written with compact
// stamps (crdt.Compact: a replica table and a base wall in keys 7 and 8,
// docs/protocol.md "Compact stamps") by their MarshalCBOR methods, and
// read in either form by their UnmarshalCBOR methods, which read the
// envelope first and then its records against it. Everything else about a
// record (its seal, its size limit, what is stored) is of its plain form.
// A push body may name its replica by its device part (key 9), which only
// the principal's prefix completes: the server reads pushes with
// DecodePush, and an encoder writes key 9 only when PushRequest.Prefix
// says the token it goes with vouches for the rest.
//
// A push over a live session (PushLive) names no replica and writes its
// walls from the session base unless it carries a base of its own: both
// ends read and write it against the Session (DecodePushLive,
// EncodeMessage), and the server answers it with Pushed.
package proto
