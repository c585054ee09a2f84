// A push the server refuses whole (docs/protocol.md, "Push" and section 5),
// over HTTP and over a live session: too_large and malformed are the
// changes' fault, so the batch is split down to the change at fault,
// which alone is refused (rolled back, kept among the rejected changes,
// a 'refused' event) while the rest of the outbox flows, unless the server
// refuses a push of no changes too (the fault is then not a change's);
// forbidden and unauthenticated are not the changes' fault, so they stay
// in the outbox and the client keeps saying so (status and 'error'
// events).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { openClient, until } from './helpers/util.js';

const WAIT = 10_000;

/**
 * A fake server and a client 'a' of 'todos' (its live session open when
 * live), with the errors and refusals the client reports.
 * @param {import('node:test').TestContext} t
 * @param {boolean} live
 * @param {ConstructorParameters<typeof FakeServer>[0]} [serverOpts]
 */
async function setup(t, live, serverOpts) {
  const server = await new FakeServer(serverOpts).start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], ...(live ? {} : { WebSocket: null }) });
  t.after(() => a.close());
  /** @type {any[]} */
  const errors = [];
  a.on('error', (e) => errors.push(e));
  /** @type {any[]} */
  const refused = [];
  a.on('refused', (r) => refused.push(r));
  await a.whenSynced();
  if (live) await until(() => /** @type {any} */ (a).syncer?.live, 'live', WAIT);
  return { server, a, errors, refused };
}

/**
 * Writes ids in one batch (paused, so they go out together), then resumes.
 * @param {any} a
 * @param {string[]} ids
 * @param {(id: string) => object} [doc]
 */
async function writeBatch(a, ids, doc = () => ({ n: 1 })) {
  await a.pause();
  for (const id of ids) await a.collection('todos').put(id, doc(id));
  assert.equal(a.status.pending, ids.length);
  a.resume();
}

/**
 * Checks that 'bad' alone was refused with code and the rest flowed: on
 * the server, rolled back here, kept among the rejected changes; and that
 * a later write syncs too.
 * @param {any} ctx
 * @param {string} code
 * @param {string[]} good
 */
async function onlyBadRefused({ server, a, refused }, code, good) {
  await until(() => a.status.pending === 0 && refused.length === 1, 'the outbox drained, one change refused', WAIT);
  assert.equal(refused[0].id, 'bad');
  assert.equal(refused[0].code, code);
  assert.ok(refused[0].requestId, 'the refusal quotes the request id');
  assert.equal(a.status.rejected, 1);
  const rejected = await a.rejected();
  assert.deepEqual(rejected.map((/** @type {any} */ r) => [r.recordId, r.code]), [['bad', code]]);
  assert.equal(await a.collection('todos').get('bad'), null, 'rolled back');
  assert.equal(server.coll('todos').byId.has('bad'), false);
  for (const id of good) assert.ok(server.coll('todos').byId.has(id), `${id} on the server`);
  await a.collection('todos').put('later', { n: 2 });
  await until(() => server.coll('todos').byId.has('later') && a.status.pending === 0, 'a later write syncs', WAIT);
}

for (const live of [false, true]) {
  const how = live ? 'live' : 'over HTTP';

  test(`a push refused whole as malformed (${how}): the batch is split down to the change the server cannot read, which alone is refused; the rest flows`, async (t) => {
    const ctx = await setup(t, live);
    ctx.server.refusePush = (changes) => (changes.some((ch) => ch.record.id === 'bad') ? 'malformed' : null);
    const good = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
    await writeBatch(ctx.a, ['a', 'b', 'c', 'bad', 'd', 'e', 'f', 'g']);
    await onlyBadRefused(ctx, 'malformed', good);
  });

  test(`a server that refuses every push as malformed (${how}), an empty one too: the fault is not a change's, nothing is rejected, the changes stay and the client keeps saying so`, async (t) => {
    const ctx = await setup(t, live);
    ctx.server.refusePush = () => 'malformed';
    await writeBatch(ctx.a, ['a', 'b', 'c']);
    await until(() => ctx.errors.filter((e) => e.code === 'malformed').length >= 2, 'malformed reported again and again', WAIT);
    assert.equal(ctx.a.status.lastError?.code, 'malformed');
    assert.equal(ctx.a.status.pending, 3, 'kept in the outbox');
    assert.equal(ctx.a.status.rejected, 0);
    assert.deepEqual(ctx.refused, []);
    assert.deepEqual((await ctx.a.collection('todos').list()).map((d) => d.id), ['a', 'b', 'c'], 'kept locally');
    ctx.server.refusePush = () => null;
    await until(() => ctx.a.status.pending === 0, 'the outbox drained once the server reads it', WAIT);
    assert.equal(ctx.server.coll('todos').byId.size, 3);
    assert.deepEqual(ctx.refused, []);
  });

  test(`a server that stops refusing every push as malformed between a lone change and the push of none (${how}): the change goes once more, and nothing is rejected`, async (t) => {
    const ctx = await setup(t, live);
    let readsAgain = false;
    ctx.server.refusePush = (changes) => {
      if (changes.length === 0) readsAgain = true; // the push of none: the server is mended from here on
      return readsAgain ? null : 'malformed';
    };
    await writeBatch(ctx.a, ['a', 'b', 'c']);
    await until(() => ctx.a.status.pending === 0, 'the outbox drained', WAIT);
    assert.equal(ctx.server.coll('todos').byId.size, 3, 'every change taken');
    assert.deepEqual(ctx.refused, []);
    assert.equal(ctx.a.status.rejected, 0);
  });

  test(`a single change over the server's max body is refused too_large alone (${how}); the rest flows`, async (t) => {
    const ctx = await setup(t, live, { maxBody: 4096 });
    await writeBatch(ctx.a, ['a', 'b', 'bad', 'c'], (id) => (id === 'bad' ? { blob: 'x'.repeat(5000) } : { n: 1 }));
    await onlyBadRefused(ctx, 'too_large', ['a', 'b', 'c']);
  });

  test(`after the change at fault is refused too_large alone (${how}), the rest of the outbox goes in batches of max-push again, not one by one`, async (t) => {
    const ctx = await setup(t, live, { maxPush: 8 });
    ctx.server.refusePush = (changes) => (changes.some((ch) => ch.record.id === 'bad') ? 'too_large' : null);
    const good = Array.from({ length: 19 }, (_, i) => 'g' + String(i).padStart(2, '0'));
    await writeBatch(ctx.a, [good[0], 'bad', ...good.slice(1)]);
    await onlyBadRefused(ctx, 'too_large', good);
    // g00 alone (the halves before bad), then the 18 after it by 8.
    assert.deepEqual(ctx.server.pushStatuses.slice(0, 4).map((s) => s.length), [1, 8, 8, 2]);
  });

  test(`a server that takes fewer changes per push than its hello said (${how}): too_large splits the batch, nothing is refused`, async (t) => {
    const ctx = await setup(t, live);
    ctx.server.opts.maxPush = 2; // restarted with a lower limit
    const ids = ['a', 'b', 'c', 'd', 'e'];
    await writeBatch(ctx.a, ids);
    await until(() => ctx.a.status.pending === 0, 'the outbox drained', WAIT);
    for (const id of ids) assert.ok(ctx.server.coll('todos').byId.has(id), id);
    assert.deepEqual(ctx.refused, []);
    assert.ok(ctx.server.pushStatuses.every((s) => s.length <= 2));
  });

  for (const code of ['forbidden', 'unauthenticated']) {
    test(`a push refused whole as ${code} (${how}): nothing is rejected, the changes stay and the client keeps saying so until the server takes them`, async (t) => {
      const ctx = await setup(t, live);
      ctx.server.refusePush = () => code;
      await writeBatch(ctx.a, ['a', 'b', 'c']);
      await until(() => ctx.errors.filter((e) => e.code === code).length >= 2, `${code} reported again and again`, WAIT);
      assert.equal(ctx.a.status.lastError?.code, code);
      assert.equal(ctx.a.status.pending, 3, 'kept in the outbox');
      assert.equal(ctx.a.status.rejected, 0);
      assert.deepEqual(ctx.refused, []);
      assert.deepEqual((await ctx.a.collection('todos').list()).map((d) => d.id), ['a', 'b', 'c'], 'kept locally');
      assert.equal(ctx.server.coll('todos').byId.size, 0);
      ctx.server.refusePush = () => null;
      await until(() => ctx.a.status.pending === 0, 'the outbox drained once the server takes it', WAIT);
      assert.equal(ctx.server.coll('todos').byId.size, 3);
      assert.deepEqual(ctx.refused, []);
    });
  }
}
