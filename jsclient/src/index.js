// Convergo's browser client: offline-first records in IndexedDB that
// converge with a Convergo server. See README.md for usage.
//
//   import { open } from '/convergo/index.js';
//   const db = await open({ url: location.origin, name: 'app', getToken });
//   const todos = db.collection('demo.todos');
//   await todos.put('t1', { title: 'milk', done: false });
//   const stop = todos.subscribe({ orderBy: 'title' }, (docs) => render(docs));

export { open, Database } from './database.js';
export { Collection } from './collection.js';
export { ConvergoError } from './errors.js';
export { Float } from './cbor.js';
