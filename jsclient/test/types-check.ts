// Compile-only check that the hand-written types (src/index.d.ts) describe
// the API as apps use it: `npm run typecheck`. Not run by node --test.

import { open, ConvergoError, Float, type Doc, type Status, type RejectedChange, type Unreadable, type Value, type MigrationDefinition } from '../src/index.js';
import { defaults, parseDefinition, type Definition } from '../src/migrate.js';

interface Todo {
  title: string;
  done: boolean;
  created?: number;
}

export async function usage(): Promise<void> {
  const db = await open({ url: 'https://example.com', name: 'app', getToken: async () => 'jwt', collections: ['demo.todos'] });
  const todos = db.collection<Todo>('demo.todos');
  const doc: Doc<Todo> = await todos.put('t1', { title: 'milk', done: false });
  const maybe: Doc<Todo> | null = await todos.get(doc.id);
  await todos.update('t1', { done: true });
  const many: Doc<Todo>[] = await todos.putMany([{ id: 't2', title: 'eggs', done: false }]);
  void many;
  await todos.delete('t1');
  const some: Doc<Todo>[] = await todos.query({ where: { done: false }, orderBy: 'title', desc: true, limit: 10 });
  const pred: Doc<Todo>[] = await todos.query({ where: (d) => d.title.startsWith('m') });
  const stop1: () => void = todos.subscribe('t1', (d) => d?.title);
  const stop2: () => void = todos.subscribe({ orderBy: 'created' }, (docs) => docs.map((d) => d.title));
  const off = db.on('status', (s: Status) => s.pending + (s.lastSyncedAt ?? 0));
  db.on('refused', (r) => r.code);
  db.on('superseded', (s) => s.lost.join(',') + s.collection + s.id + (s.status === 'applied' ? '' : s.status));
  db.on('error', (e) => (e instanceof ConvergoError ? e.requestId ?? e.code : e.message));
  db.on('error', (e) => (e instanceof ConvergoError ? e.code : e.message));
  db.on('auth', (e) => db.setToken(e.code));
  await db.sync();
  const { refused }: { refused: number } = await db.whenSynced();
  db.on('refused', (r) => (r.rejectedId ?? 0) + r.dropped + (r.requestId ?? ''));
  db.on('serverReset', (r) => r.collection + r.reason + r.message);
  db.on('reset', (r) => r.lost + r.rejected);
  db.on('reconciled', (r) => r.collection + (r.dropped + r.rejected + r.restamped));
  const unreadable: Unreadable[] = db.status.unreadable;
  db.on('unreadable', (u) => u.collection + (u.op === 'heal') + u.code + u.message + (u.requestId ?? '') + unreadable.length);
  db.on('revoked', (r) => r.message + r.moved + r.dropped + (r.requestId ?? '') + String(db.status.revoked));
  await db.setScope('demo.todos', 'mine', ['or', ['eq', 'owner', { $: 'sub' }], ['in', 'team', { $: 'claims.teams' }], ['has', 'tags', 'x'], ['and', ['all']]]);
  await db.removeScope('demo.todos', 'mine');
  await open({ url: 'https://example.com', scopes: { 'demo.todos': { team: ['in', 'team', ['red', 'blue']] } } });
  const notes: MigrationDefinition = { version: 2, steps: [{ to: 2, ops: [{ op: 'rename', from: 'title', to: 'name' }, { op: 'split', from: 'who', to: ['first', 'last'], sep: ' ' }, { op: 'default', field: 'priority', value: 0 }] }] };
  const migrated = await open({ url: 'https://example.com', migrations: { 'demo.notes': notes } });
  migrated.on('schemaAhead', (e) => e.code === 'schema_ahead' && migrated.status.schemaAhead);
  const checked: Definition = parseDefinition(notes);
  const fresh: Map<string, unknown> = defaults(checked, checked.version);
  void fresh;
  const rejected: RejectedChange[] = await db.rejected();
  for (const j of rejected) {
    const v: Value | undefined = j.change.fields['title'];
    void [v, j.change.unset, j.change.deleted, j.recordId, j.when, j.subject, j.requestId];
    if (j.code === 'too_large') await db.retry(j.id);
    else await db.discard(j.id);
  }
  void [refused, db.status.held + db.status.rejected];
  await db.pause();
  db.resume();
  const any = db.collection('misc');
  await any.put('x', { n: 1, big: 2n ** 64n - 1n, bytes: new Uint8Array(2), f: new Float(1), nested: { list: [1, 'a', null] } });
  void [maybe, some, pred, stop1, stop2, off, db.status.online];
  await db.close();
}

import { useDoc, useQuery, useStatus } from '../src/react.js';

export function reactUsage(db: Awaited<ReturnType<typeof open>>): string {
  const todos = db.collection<Todo>('demo.todos');
  const rows: Doc<Todo>[] | undefined = useQuery(todos, { where: { done: false }, orderBy: 'title' });
  const one: Doc<Todo> | null | undefined = useDoc(todos, 't1');
  const status: Status | undefined = useStatus(db);
  return `${rows?.length} ${one?.title} ${status?.pending}`;
}
