// A tab that does not lead drops a count of the outbox that meets a
// rejected change no refused message told it of, for DOUBT_MS (2 s), so
// that whenSynced does not resolve without the refusal (peer.js recount).
// Driven on a stand-in for the tab's state, with the timers mocked.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { recount } from '../src/peer.js';

/**
 * A stand-in for a tab that does not lead, whose count of the outbox is
 * outboxView; taken lists the pending counts taken into its status.
 * @param {() => Promise<{counts: {pending: number, held: number}, newest: number}>} outboxView
 */
function standIn(outboxView) {
  /** @type {number[]} */
  const taken = [];
  const tab = {
    _status: { leader: false },
    _heard: 0,
    _doubt: null,
    closed: false,
    store: { outboxView },
    _setStatus: (/** @type {{pending: number}} */ s) => taken.push(s.pending),
  };
  return { tab, taken };
}

const settle = () => new Promise((r) => setImmediate(r));

test('a refusal not told of yet gets its whole wait, even just after an earlier one was told of', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    /** @type {{counts: {pending: number, held: number}, newest: number}} */
    let view = { counts: { pending: 1, held: 0 }, newest: 0 };
    const { tab, taken } = standIn(async () => view);
    // Change 1 refused: the count sees it gone before the message.
    view = { counts: { pending: 1, held: 0 }, newest: 1 };
    recount(/** @type {any} */ (tab));
    await settle();
    assert.deepEqual(taken, [], 'a count meeting a refusal not told of is dropped');
    // The refused message of change 1 comes: the count is taken.
    tab._heard = 1;
    recount(/** @type {any} */ (tab));
    await settle();
    assert.deepEqual(taken, [1]);
    // Change 2 is refused 1.9 s after the first doubt; its message is late.
    mock.timers.tick(1_900);
    view = { counts: { pending: 0, held: 0 }, newest: 2 };
    recount(/** @type {any} */ (tab));
    await settle();
    assert.deepEqual(taken, [1], 'a count meeting refusal 2, not told of, is dropped');
    mock.timers.tick(100);
    await settle();
    assert.deepEqual(taken, [1], "refusal 2 waits its own 2 s, not what was left of refusal 1's");
    mock.timers.tick(1_900);
    await settle();
    assert.deepEqual(taken, [1, 0], 'without a message, the count is taken after 2 s');
  } finally {
    mock.timers.reset();
  }
});

test('a count asked with trust while one without is under way is taken, in the one count after it', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    // A rejected change no refused message told of: only a count with
    // trust takes it.
    const view = { counts: { pending: 0, held: 0 }, newest: 1 };
    /** @type {(() => void)[]} the counts under way, each released by its function */
    const under = [];
    const { tab, taken } = standIn(() => new Promise((r) => under.push(() => r(view))));
    recount(/** @type {any} */ (tab));
    // Asked meanwhile: a status message, another tab's rejected changes
    // (trust), a status message again.
    recount(/** @type {any} */ (tab));
    recount(/** @type {any} */ (tab), true);
    recount(/** @type {any} */ (tab));
    assert.equal(under.length, 1, 'one count under way');
    under[0]();
    await settle();
    assert.deepEqual(taken, [], 'the count without trust meets the change not told of: dropped');
    assert.equal(under.length, 2, 'one more count for the three asked meanwhile');
    under[1]();
    await settle();
    assert.deepEqual(taken, [0], 'the count after carries the trust one of them had');
    assert.equal(tab._doubt, null, 'and it ends the doubt');
    assert.equal(tab._heard, 1);
    mock.timers.tick(2_000);
    await settle();
    assert.equal(under.length, 2, 'no count at the end of a doubt ended');
  } finally {
    mock.timers.reset();
  }
});
