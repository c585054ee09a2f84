// `convergo/cbor`: the codec (cbor.js) with normalizeValue, which lives in
// normalize.js, and the check without decoding (check.js), so that the main
// entry, which needs neither, does not load them. Its Reader is cbor.js's
// with check and skip.

import { Reader as BaseReader } from './cbor.js';
import { arrayHead, check, skip } from './check.js';

export * from './cbor.js';
export { checkValue, textOK, validUTF8 } from './check.js';
export { normalizeValue } from './normalize.js';

/** cbor.js's Reader, with check.js's check, skip and arrayHead as methods. */
export class Reader extends BaseReader {
  /** @returns {number} the length of an array (check.js arrayHead) */
  arrayHead() {
    return arrayHead(this);
  }

  /**
   * check.js check at this reader.
   * @param {number} [depth]
   * @param {boolean} [full]
   */
  check(depth, full) {
    check(this, depth, full);
  }

  /**
   * check.js skip at this reader.
   * @param {number} [depth]
   */
  skip(depth) {
    skip(this, depth);
  }
}
