// B3's update bytes alone (sizes: load does not change them), without the
// timed applications of b3.mjs: for each scenario, every client of Yjs
// (V2 updates) and of Convergo's JS client makes its write through its own
// write path (b3-impls.mjs factories, as b3-run.mjs does), and the bytes
// of all clients' updates are summed. Convergo's in three rows: the live
// push over an open session whose welcome came 1 s before the write (3-byte
// wall differences) or 3 h before (5-byte ones), and the HTTP push body.
// Prints a Markdown table with the ratios to Yjs V2's bytes of the same run.
//
// Usage: node b3-bytes.mjs [scenario,...]

import { factories, liveBytes, scenarios } from './b3-impls.mjs';

const only = process.argv[2]?.split(',');
const fmt = (/** @type {number} */ n) => n.toLocaleString('en-US');

/**
 * The summed bytes of every client's updates for scenario sc.
 * @param {string} impl
 * @param {any} sc
 */
async function bytesOf(impl, sc) {
  let bytes = 0;
  const docs = [];
  for (let i = 0; i < sc.clients; i++) docs.push(await factories[impl].create((/** @type {Uint8Array} */ u) => (bytes += u.length)));
  for (let i = 0; i < sc.clients; i++) await docs[i].setMap(sc.key(i), sc.value(i));
  return bytes;
}

console.log('| scenario | Yjs 13 V2 | JS client, live push, session opened 1 s before | ratio | ≤ 1.2 | JS client, live push, session opened 3 h before | ratio | ≤ 1.2 | JS client, HTTP push body | ratio | ≤ 1.2 |');
console.log('| --- | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | --- |');
for (const sc of scenarios.filter((s) => !only || only.includes(s.id))) {
  const yjs = await bytesOf('yjs', sc);
  liveBytes.recent = 0;
  liveBytes.hours = 0;
  const http = await bytesOf('convergo', sc);
  const cells = [liveBytes.recent, liveBytes.hours, http].map((b) => {
    const r = b / yjs;
    return `${fmt(b)} | ${r.toFixed(2)} | ${r <= 1.2 ? 'met' : '**not met**'}`;
  });
  console.log(`| ${sc.id} | ${fmt(yjs)} | ${cells.join(' | ')} |`);
}
process.exit(0);
