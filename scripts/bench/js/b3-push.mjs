// Reading a push body back into its changes, for the B3 drivers (Node and
// the Chromium page, which pass the client's own modules in: this file
// imports nothing, so a page can load it as it is).
//
// A push body is {1: replica, 2: [change, ...]}, with 3: the schema
// version of each collection (skipped: B3 declares no migrations) and, with
// compact stamps (docs/protocol.md, "Compact stamps"), 7: the replica table
// after the push's own replica, 8: the base wall. The changes come before
// the keys they are read against, so the body's keys are located first,
// then the changes read with the client's readChange in the context its
// compactContext makes (when the client has one: before compact stamps it
// has none and the body has neither key). A body sent with the token of
// the pushing replica's subject names the replica by its device part (key
// 9, in place of 1): the reader puts the prefix of that subject in front,
// as the server does with the token's. Any other key fails loudly, so a
// change of the push body cannot pass unnoticed.

/**
 * @param {{Reader: any}} cbor jsclient/src/codec.js (its Reader has skip)
 * @param {{readChange: Function, compactContext?: Function, receivedValue: Function}} record jsclient/src/change.js's readChange, protocol.js's compactContext and normalize.js's receivedValue (how readChange reads and holds each value, as the client's own push and pull readers do)
 * @param {string} [prefix] the replica prefix of the subject whose token the bodies went with (key 9)
 * @returns {(body: Uint8Array) => {collection: string, record: any}[]}
 */
export function pushDecoder(cbor, record, prefix) {
  const { Reader } = cbor;
  return (body) => {
    const r = new Reader(body, { canonical: false });
    /** @type {Map<number, number>} where each key's value starts */
    const at = new Map();
    for (let i = 0, n = r.mapHead(); i < n; i++) {
      const k = r.item();
      if (k !== 1 && k !== 2 && k !== 3 && k !== 7 && k !== 8 && k !== 9) throw new Error(`push body key ${k}: not read by this benchmark`);
      at.set(k, r.off);
      r.skip();
    }
    r.end();
    const item = (/** @type {number} */ k) => {
      const ir = new Reader(body, { canonical: false });
      ir.off = at.get(k);
      return ir;
    };
    if (at.has(1) === at.has(9) || !at.has(2)) throw new Error('push body without its replica (or with key 1 and key 9) or changes');
    if (at.has(9) && !prefix) throw new Error('push body naming its replica by its device part, read without a prefix');
    const replica = at.has(1) ? item(1).text() : `${prefix}_${item(9).text()}`;
    let cx;
    if (record.compactContext) {
      const table = [];
      if (at.has(7)) {
        const t = item(7);
        for (let i = 0, n = t.arrayHead(); i < n; i++) table.push(t.text());
      }
      cx = record.compactContext([replica, ...table], at.has(8) ? item(8).item() : undefined);
    } else if (at.has(7) || at.has(8)) {
      throw new Error('push body with compact stamps, but the client has no compactContext');
    }
    const ar = item(2);
    const out = [];
    for (let i = 0, n = ar.arrayHead(); i < n; i++) out.push(record.readChange(ar, cx, record.receivedValue));
    return out;
  };
}
