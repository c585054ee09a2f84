// `convergo/cbor`: the codec (cbor.js) with normalizeValue, which lives in
// normalize.js so that the main entry, which never needs it, does not load
// it.

export * from './cbor.js';
export { normalizeValue } from './normalize.js';
