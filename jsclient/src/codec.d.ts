// Types of convergo/cbor (src/codec.js): the deterministic CBOR codec of
// src/cbor.js with normalizeValue (src/normalize.js) and the checks
// without decoding (src/check.js). Hand-written; kept in step with their
// JSDoc (test/package-types.test.js holds the names to what codec.js
// exports).

import type { ConvergoError } from './index.js';
export { Float } from './index.js';

/** Deepest nesting of a message. */
export const MAX_DEPTH: number;
/** Deepest nesting of a field value. */
export const MAX_VALUE_DEPTH: number;
/** Most items of one array or map. */
export const MAX_ITEMS: number;
/** Most bytes of one encoded field value. */
export const MAX_VALUE_BYTES: number;
/** decode's default bound (maxBytes). */
export const MAX_MESSAGE_BYTES: number;

/** A ConvergoError with a codec code. */
export function err(code: 'malformed' | 'invalid' | 'too_large', msg: string): ConvergoError;
export const utf8dec: TextDecoder;

/** Appends deterministic CBOR to a growing buffer. */
export class Writer {
  constructor(size?: number);
  buf: Uint8Array;
  view: DataView;
  len: number;
  ensure(n: number): void;
  byte(b: number): void;
  raw(bytes: Uint8Array): void;
  head(major: number, n: number | bigint): void;
  text(s: string): void;
  float(x: number): void;
  /** A value of the value model (refuses what is outside it: invalid). */
  value(v: unknown, depth?: number): void;
  /** The bytes written so far. */
  bytes(): Uint8Array;
}

/** A value of the value model as deterministic CBOR; throws invalid or too_large. */
export function encode(v: unknown): Uint8Array;
export function encodeWith(write: (w: Writer) => void): Uint8Array;
export function toHalfExact(x: number): number | null;
export function fromHalf(h: number): number;
export function compareBytes(a: Uint8Array, b: Uint8Array): -1 | 0 | 1;
export function equalBytes(a: Uint8Array | null | undefined, b: Uint8Array | null | undefined): boolean;
export function utf8Length(s: string): number;
export function isWellFormed(s: string): boolean;

/** Reads CBOR with the hardened checks (with check, skip and arrayHead of check.js). */
export class Reader {
  constructor(bytes: Uint8Array, opts?: { canonical?: boolean });
  b: Uint8Array;
  off: number;
  canonical: boolean;
  readonly view: DataView;
  end(): void;
  head(): { major: number; info: number; arg: number | bigint };
  len(arg: number | bigint, minBytesEach: number): number;
  count(arg: number | bigint, each: 1 | 2): number;
  text(): string;
  textBody(arg: number | bigint): string;
  mapHead(): number;
  item(depth?: number): unknown;
  map(arg: number | bigint, depth: number): Map<unknown, unknown> | Record<string, unknown>;
  arrayHead(): number;
  check(depth?: number, full?: boolean): void;
  skip(depth?: number): void;
}

export function setOwn(obj: Record<string, unknown>, k: string, v: unknown): void;
/**
 * Decodes exactly one data item; canonical (default true) also refuses
 * non-deterministic encodings; maxBytes defaults to MAX_MESSAGE_BYTES.
 */
export function decode(bytes: Uint8Array, opts?: { canonical?: boolean; maxBytes?: number }): unknown;
export function checkValueSize(n: number): void;
export function compareRanges(a: Uint8Array, a0: number, a1: number, b: Uint8Array, b0: number, b1: number): -1 | 0 | 1;
/** Checks an encoded field value against the value model without decoding it. */
export function checkValue(v: Uint8Array): void;
export function textOK(b: Uint8Array, start: number, end: number): boolean;
export function validUTF8(b: Uint8Array, start: number, end: number): boolean;
/** A field value in any encoding of the value model, in the deterministic one (as the server's crdt.NormalizeValue). */
export function normalizeValue(v: Uint8Array): Uint8Array;
