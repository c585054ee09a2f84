// Types for convergo/migrate (src/migrate.js): schema version definitions
// and the translation of records and changes between versions. Hand-written;
// kept in step with the JSDoc in migrate.js.

/** One op of a step. */
export type MigrationOp =
  | { op: 'rename'; from: string; to: string }
  | { op: 'split'; from: string; to: string[]; sep: string }
  | { op: 'merge'; from: string[]; to: string; sep: string }
  | { op: 'default'; field: string; value: unknown }
  | { op: 'drop'; field: string };

/**
 * The "migrations" object of a collection's rule in the server's rules
 * file: version is the current version (1 with no steps), steps[i] goes
 * from version i+1 to i+2 and says so in to.
 */
export interface MigrationDefinition {
  version: number;
  steps?: { to: number; ops: MigrationOp[] }[];
}

/** A checked definition (parseDefinition). */
export interface Definition {
  version: number;
  steps: { to: number; ops: MigrationOp[] }[];
}

/** A field of a record: its stamp and canonical value bytes (null: unset). */
export interface Field {
  stamp: { wall: number; logical: number; replica: string };
  value: Uint8Array | null;
}

/** A record or change as the client holds it (src/record.js). */
export interface MigrationRecord {
  id: string;
  deleted: { wall: number; logical: number; replica: string };
  fields: Map<string, Field>;
}

export const MAX_STEPS: number;
export const MAX_OPS: number;

/** Checks a definition; throws ConvergoError('invalid') saying what is wrong. */
export function parseDefinition(def: unknown): Definition;

/** The values absent fields read as at version v. */
export function defaults(def: Definition, v: number): Map<string, unknown>;

/**
 * Translates a record or change between versions (stamps kept, resolving);
 * a change the migration cannot map throws ConvergoError with code
 * 'untranslatable'.
 */
export function translate(def: Definition, r: MigrationRecord, from: number, to: number, kind: 'record' | 'change'): MigrationRecord;
export function up(def: Definition, r: MigrationRecord, from: number, to: number, kind: 'record' | 'change'): MigrationRecord;
export function down(def: Definition, r: MigrationRecord, from: number, to: number, kind: 'record' | 'change'): MigrationRecord;
