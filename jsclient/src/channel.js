// The BroadcastChannel and the Web Lock through which the tabs of one
// database work together (tabs.js names the messages and who sends each).
// Only the Database opens them (database.js), so this part loads with the
// main entry alone; the messages' names are also the modules' loaded on
// demand.

/** @typedef {import('./tabs.js').TabMsg} TabMsg */

/**
 * The name of a database's lock and channel.
 * @param {string} name the database name
 */
function tabKey(name) {
  return 'convergo:' + name;
}

/** The BroadcastChannel between the tabs of one database. */
export class TabChannel {
  /**
   * @param {any} BC the BroadcastChannel constructor
   * @param {string} name the database name
   * @param {(m: any) => void} onMessage called with what other tabs post
   *   (unchecked: tabs may run other versions of this code)
   */
  constructor(BC, name, onMessage) {
    this.channel = new BC(tabKey(name));
    this.channel.onmessage = (/** @type {MessageEvent} */ ev) => onMessage(ev.data);
  }

  /** @param {TabMsg} m */
  post(m) {
    try {
      this.channel.postMessage(m);
    } catch {
      /* closed */
    }
  }

  close() {
    try {
      this.channel.close();
    } catch {
      /* already */
    }
  }
}

/**
 * Asks for leadership of database name among its tabs. Once this tab holds
 * the lock, unless closed() by then, it calls lead() and then held() with
 * the function that gives the lock up. Failures go to onError.
 * @param {{request: Function}} locks Web Locks (navigator.locks)
 * @param {string} name the database name
 * @param {{closed: () => boolean, lead: () => void, held: (release: () => void) => void, onError: (e: Error) => void}} o
 */
export function requestLeadership(locks, name, o) {
  locks
    .request(tabKey(name), () => {
      if (o.closed()) return undefined;
      o.lead();
      return new Promise((resolve) => {
        o.held(() => resolve(undefined));
      });
    })
    .catch((/** @type {Error} */ e) => o.onError(e));
}
