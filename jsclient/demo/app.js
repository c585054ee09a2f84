// Convergo demo: a shared todo list that works offline.
//
// Each person on the page is a separate replica with its own IndexedDB
// database (open({name})), so two people fit in one browser: take both
// offline, edit, bring them back and watch the edits merge. ?people=Alice
// shows one list, for other tabs and devices; ?people=Alice,Bob,Carol up to
// four.
//
// A todo is one record of the collection demo.todos with the fields title,
// done and created. Fields merge independently (last writer wins per
// field), which is what makes "Alice renames, Bob ticks" keep both edits.
//
// Below the todos, each person has notes (collection demo.notes: title,
// owner, shared, created) that the server scopes: a person syncs their own
// notes and every shared one (the server's built-in demo rule, owner ==
// $sub or shared == true). That needs an identity per person, so the notes
// are a second database per person, signed in with a short-lived token the
// demo server issues for subject demo:<slug> (POST /demo/token). Unsharing a
// note makes the server send the others a leave entry: it leaves their copy.

import { open } from '/convergo/index.js';
import { PATHS } from '/convergo/constants.js';

const COLLECTION = 'demo.todos';
const NOTES = 'demo.notes';
const DEMO_TOKEN = '/demo/token'; // transport.PathDemoToken
const MAX_DEMO_NAME = 32; // transport's demo name limit
const MAX_PEOPLE = 4;
const MAX_TITLE = 200;
const SHELL_CACHE = 'convergo-demo-v1'; // the name sw.js uses
const LIBRARY = '/convergo/'; // where the imports above come from
const MODULES_FILE = 'modules.json'; // jsclient.ModulesFile: the library's modules, listed by the server

const $ = (sel, root = document) => root.querySelector(sel);

/** The people to show, from ?people=, cleaned to short names. */
function peopleFromURL() {
  const raw = new URLSearchParams(location.search).get('people') ?? 'Alice,Bob';
  const seen = new Set();
  const out = [];
  for (const part of raw.split(',')) {
    const name = part.trim().replace(/[^\p{L}\p{N} _-]/gu, '').slice(0, 24);
    if (!name) continue;
    // A stable ASCII key for the database name and test ids; names with no
    // ASCII letters (李, Ζωή) get one from their code points.
    const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '')
      || [...name].map((c) => c.codePointAt(0).toString(36)).join('-');
    if (seen.has(slug)) continue;
    seen.add(slug);
    out.push({ name, slug });
    if (out.length === MAX_PEOPLE) break;
  }
  return out.length ? out : [{ name: 'Alice', slug: 'alice' }];
}

/** A todo as the app sees it, from whatever shape the store holds. */
function todoOf(id, doc) {
  return {
    id,
    title: typeof doc?.title === 'string' ? doc.title : '(untitled)',
    done: doc?.done === true,
    created: Number.isFinite(doc?.created) ? doc.created : 0,
  };
}

/** Todos of a query answer (documents carrying their id), oldest first. */
function rowsOf(docs) {
  const rows = [];
  for (const doc of docs ?? []) {
    if (doc && typeof doc.id === 'string') rows.push(todoOf(doc.id, doc));
  }
  rows.sort((a, b) => a.created - b.created || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return rows;
}

/** Text cut to n characters, for titles that may be huge. */
function short(text, n = 60) {
  const s = String(text);
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

function errorText(err) {
  if (!err) return '';
  const code = err.code ? `${err.code}: ` : '';
  return code + (err.message ?? String(err));
}

function relativeTime(ms, now) {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  return new Date(ms).toLocaleString();
}

/** One person's list: a replica, its status and its todos. */
/**
 * Reconciles a list's rows with `rows` (each with an id): reuses the <li>
 * kept in `items` for an id (cloning `template` for a new one), lets
 * `update` fill it in, keeps DOM order without moving nodes that are
 * already in place (so an open editor keeps its focus), and removes the
 * rows no longer there.
 */
function renderRows(list, items, rows, template, update) {
  const seen = new Set();
  let prev = null;
  for (const row of rows) {
    seen.add(row.id);
    let li = items.get(row.id);
    if (!li) {
      li = $(template).content.firstElementChild.cloneNode(true);
      li.dataset.id = row.id;
      items.set(row.id, li);
    }
    update(li, row);
    const want = prev ? prev.nextElementSibling : list.firstElementChild;
    if (want !== li) list.insertBefore(li, want);
    prev = li;
  }
  for (const [id, li] of items) {
    if (!seen.has(id)) {
      li.remove();
      items.delete(id);
    }
  }
}

class Pane {
  constructor(person, root) {
    this.person = person;
    this.root = root;
    this.db = null;
    this.todos = null;
    this.rows = [];
    this.items = new Map(); // id -> <li>
    this.paused = false;
    this.status = null;

    root.dataset.testid = `pane-${person.slug}`;
    root.dataset.person = person.slug;
    const heading = $('.person', root);
    heading.id = `person-${person.slug}`;
    root.setAttribute('aria-labelledby', heading.id);
    $('.person-name', root).textContent = person.name;
    $('.avatar', root).textContent = person.name[0].toUpperCase();

    const input = $('[data-testid=new-title]', root);
    input.id = `new-${person.slug}`;
    $('.add label', root).htmlFor = input.id;
    input.placeholder = `What does ${person.name} need to do?`;

    this.statusEl = $('[data-testid=status]', root);
    this.rejectedEl = $('[data-testid=rejected]', root);
    this.noticeEl = $('[data-testid=notice]', root);
    this.noticeTimer = null;
    this.rejectedShown = -1;
    this.list = $('[data-testid=todo-list]', root);
    this.toggle = $('[data-testid=offline-toggle]', root);
    this.toggle.setAttribute('aria-describedby', heading.id);

    $('[data-testid=add-form]', root).addEventListener('submit', (e) => {
      e.preventDefault();
      const title = input.value.trim().slice(0, MAX_TITLE);
      if (!title) return;
      input.value = '';
      this.run('add', () => this.add(title));
    });
    this.toggle.addEventListener('click', () => this.run('toggle sync', () => this.setPaused(!this.paused)));
    this.list.addEventListener('change', (e) => {
      const li = e.target.closest('li[data-id]');
      if (li && e.target.matches('[data-testid=todo-done]')) {
        this.run('tick', () => this.todos.update(li.dataset.id, { done: e.target.checked }));
      }
    });
    this.rejectedEl.addEventListener('click', (e) => {
      const li = e.target.closest('li[data-rejected-id]');
      if (!li) return;
      const id = Number(li.dataset.rejectedId);
      if (e.target.matches('[data-testid=rejected-retry]')) this.run('retry', () => this.db.retry(id).then(() => this.renderRejected()));
      else if (e.target.matches('[data-testid=rejected-discard]')) this.run('discard', () => this.db.discard(id).then(() => this.renderRejected()));
    });
    this.list.addEventListener('click', (e) => {
      const li = e.target.closest('li[data-id]');
      if (!li) return;
      if (e.target.matches('[data-testid=todo-edit]')) this.startEdit(li);
      else if (e.target.matches('[data-testid=todo-delete]')) this.run('delete', () => this.todos.delete(li.dataset.id));
    });
    this.notes = new Notes(person, $('[data-testid=notes]', root));
  }

  async start() {
    const db = await open({ url: location.origin, name: `demo-${this.person.slug}`, collections: [COLLECTION] });
    this.db = db;
    this.todos = db.collection(COLLECTION);
    db.on('status', (s) => this.renderStatus(s));
    // A refused change was taken back and kept: list it with retry and
    // discard (it survives reloads, so the list is read at start too).
    db.on('refused', () => this.renderRejected());
    // An edit made offline lost to a newer one: say so, briefly.
    db.on('superseded', (s) => {
      const t = this.rows.find((r) => r.id === s.id);
      this.notify(`Your edit of “${short(t?.title ?? s.id)}” (${s.lost.join(', ')}) lost to a newer one made elsewhere.`, 'superseded');
    });
    db.on('serverReset', (r) => this.notify(`The server lost history (${r.reason}); this list was given back to it.`, 'reset'));
    // Failures the status does not carry (a live query that could not
    // read, say): worth a look in the console, not a banner.
    db.on('error', (e) => console.warn(`${this.person.name}:`, e));
    this.renderStatus(db.status);
    this.todos.subscribe({ orderBy: 'created' }, (docs) => this.renderList(rowsOf(docs)));
    await this.renderRejected();
    this.root.dataset.state = 'ready';
  }

  /** Runs an action and shows what went wrong, if anything. */
  async run(what, fn) {
    if (!this.db) return; // still opening
    try {
      await fn();
      this.showError(null);
    } catch (err) {
      console.error(`${this.person.name}: ${what}`, err);
      this.showError(err, what);
    }
  }

  async add(title) {
    const id = crypto.randomUUID();
    await this.todos.put(id, { title, done: false, created: Date.now() });
    return id;
  }

  /**
   * The offline switch: pause() stops talking to the server while writes
   * keep landing in IndexedDB and its outbox; resume() pushes them.
   */
  async setPaused(paused) {
    if (paused) await Promise.all([this.db.pause(), this.notes.setPaused(true)]);
    else {
      this.db.resume();
      await this.notes.setPaused(false);
    }
    this.renderStatus(this.db.status);
  }

  renderList(rows) {
    renderRows(this.list, this.items, rows, '#todo-template', (li, t) => {
      const old = li.dataset.sig ?? null;
      const sig = JSON.stringify([t.title, t.done]);
      if (old !== sig) {
        li.dataset.sig = sig;
        li.dataset.done = String(t.done);
        li.classList.toggle('is-done', t.done);
        $('[data-testid=todo-title]', li).textContent = t.title;
        const box = $('[data-testid=todo-done]', li);
        box.checked = t.done;
        box.setAttribute('aria-label', `Done: ${t.title}`);
        $('[data-testid=todo-edit]', li).setAttribute('aria-label', `Edit “${t.title}”`);
        $('[data-testid=todo-delete]', li).setAttribute('aria-label', `Delete “${t.title}”`);
        if (old !== null) {
          li.classList.remove('flash');
          void li.offsetWidth; // restart the animation
          li.classList.add('flash');
        }
      }
    });
    this.rows = rows;
    const open = rows.filter((t) => !t.done).length;
    $('[data-testid=empty]', this.root).hidden = rows.length > 0;
    const count = $('[data-testid=count]', this.root);
    count.hidden = rows.length === 0;
    count.textContent = `${open} open, ${rows.length - open} done`;
    this.root.dataset.count = String(rows.length);
  }

  startEdit(li) {
    const form = $('[data-testid=todo-edit-form]', li);
    const input = $('[data-testid=todo-title-input]', li);
    const title = $('[data-testid=todo-title]', li);
    input.value = title.textContent;
    input.setAttribute('aria-label', `New title for “${title.textContent}”`);
    form.hidden = false;
    title.hidden = true;
    input.focus();
    input.select();
    let done = false;
    const finish = (save) => {
      if (done) return;
      done = true;
      form.hidden = true;
      title.hidden = false;
      form.removeEventListener('submit', onSubmit);
      input.removeEventListener('keydown', onKey);
      input.removeEventListener('blur', onBlur);
      const next = input.value.trim().slice(0, MAX_TITLE);
      if (save && next && next !== title.textContent) {
        title.textContent = next;
        this.run('rename', () => this.todos.update(li.dataset.id, { title: next }));
      }
      $('[data-testid=todo-edit]', li).focus();
    };
    const onSubmit = (e) => { e.preventDefault(); finish(true); };
    const onKey = (e) => { if (e.key === 'Escape') finish(false); };
    const onBlur = () => finish(true);
    form.addEventListener('submit', onSubmit);
    input.addEventListener('keydown', onKey);
    input.addEventListener('blur', onBlur);
  }

  renderStatus(s) {
    if (!s) return;
    this.status = s;
    this.paused = !!s.paused;
    this.toggle.setAttribute('aria-pressed', String(this.paused));
    this.toggle.textContent = this.paused ? 'Go online' : 'Go offline';
    const el = this.statusEl;
    const online = !!s.online && !this.paused;
    el.dataset.online = String(online);
    el.dataset.syncing = String(!!s.syncing);
    el.dataset.pending = String(s.pending ?? 0);
    el.dataset.lastSynced = s.lastSyncedAt ? String(s.lastSyncedAt) : '';
    this.root.dataset.online = String(online);
    const conn = $('[data-testid=status-online]', el);
    conn.textContent = this.paused ? 'Offline (paused)' : online ? 'Online' : 'Offline';
    // Only one tab per database talks to the server; the others follow it.
    el.dataset.leader = String(!!s.leader);
    conn.title = this.paused && s.leader === false ? 'Paused in this tab, but another tab of this browser holds the connection and keeps syncing'
      : this.paused ? 'Sync is paused: changes wait in this browser'
      : s.leader ? 'This tab holds the connection to the server'
      : 'Another tab of this browser holds the connection; this one follows it';
    $('[data-testid=status-syncing]', el).textContent = s.syncing ? 'Syncing…' : online ? 'Up to date' : 'Idle';
    const pending = s.pending ?? 0;
    const p = $('[data-testid=status-pending]', el);
    p.textContent = String(pending);
    p.setAttribute('aria-label', `${pending} change${pending === 1 ? '' : 's'} waiting to sync`);
    this.renderLastSynced();
    // Another tab retried or discarded one, or its leader heard a refusal.
    if ((s.rejected ?? 0) !== this.rejectedShown && this.db) this.renderRejected().catch(() => {});
    if (s.lastError) this.showError(s.lastError, 'sync');
    else if (this.errorFrom === 'sync') this.showError(null);
  }

  /** Shows a passing notice (a superseded edit, a server reset) for 20 s. */
  notify(text, kind) {
    const el = this.noticeEl;
    el.textContent = text;
    el.dataset.kind = kind;
    el.hidden = false;
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => { el.hidden = true; }, 20_000);
  }

  /** Lists the rejected changes, with retry and discard. */
  async renderRejected() {
    const all = await this.db.rejected();
    const list = $('[data-testid=rejected-list]', this.root);
    list.replaceChildren();
    for (const j of all) {
      const li = $('#rejected-template').content.firstElementChild.cloneNode(true);
      li.dataset.rejectedId = String(j.id);
      li.dataset.code = j.code;
      const t = this.rows.find((r) => r.id === j.recordId);
      const title = typeof j.change.fields.title === 'string' ? j.change.fields.title : t?.title;
      const what = j.change.deleted ? 'Delete' : j.change.unset.length && !Object.keys(j.change.fields).length ? 'Clear' : 'Edit';
      $('[data-testid=rejected-what]', li).textContent = `${what} “${short(title ?? j.recordId)}”`;
      $('[data-testid=rejected-why]', li).textContent = `${j.code}${j.message ? `: ${short(j.message, 120)}` : ''}`;
      li.title = `Refused ${new Date(j.when).toLocaleString()}${j.requestId ? ` (request ${j.requestId})` : ''}`;
      $('[data-testid=rejected-retry]', li).setAttribute('aria-label', `Retry: ${short(title ?? j.recordId)}`);
      $('[data-testid=rejected-discard]', li).setAttribute('aria-label', `Discard: ${short(title ?? j.recordId)}`);
      list.append(li);
    }
    this.rejectedEl.hidden = all.length === 0;
    this.rejectedShown = all.length;
    this.root.dataset.rejected = String(all.length);
  }

  renderLastSynced() {
    const t = $('[data-testid=status-last-synced] time', this.root);
    const at = this.status?.lastSyncedAt;
    if (!at) {
      t.textContent = 'never';
      t.removeAttribute('datetime');
      return;
    }
    const d = new Date(at);
    t.dateTime = d.toISOString();
    t.title = d.toLocaleString();
    t.textContent = relativeTime(d.getTime(), Date.now());
  }

  showError(err, what) {
    const el = $('[data-testid=status-error]', this.root);
    this.errorFrom = err ? what : null;
    el.hidden = !err;
    el.textContent = err ? `${what === 'sync' ? 'Sync' : `Could not ${what}`}: ${errorText(err)}` : '';
  }
}

/**
 * A person's notes: their own and everyone's shared ones, in a database of
 * their own signed in as demo:<slug>. The server decides what it holds
 * (its scope); the list shows whatever that is.
 */
class Notes {
  constructor(person, root) {
    this.person = person;
    this.root = root;
    this.name = person.slug.slice(0, MAX_DEMO_NAME);
    this.subject = `demo:${this.name}`;
    this.db = null;
    this.notes = null;
    this.items = new Map(); // id -> <li>
    this.paused = false;
    this.list = $('[data-testid=note-list]', root);
    this.errorEl = $('[data-testid=notes-error]', root);
    const heading = $('.notes-head', root);
    heading.id = `notes-${person.slug}`;
    root.setAttribute('aria-labelledby', heading.id);
    const input = $('[data-testid=new-note-title]', root);
    input.id = `new-note-${person.slug}`;
    $('label', $('[data-testid=note-form]', root)).htmlFor = input.id;
    input.placeholder = `A note of ${person.name}'s`;

    $('[data-testid=note-form]', root).addEventListener('submit', (e) => {
      e.preventDefault();
      const title = input.value.trim().slice(0, MAX_TITLE);
      if (!title) return;
      input.value = '';
      this.run('add a note', () => this.notes.put(crypto.randomUUID(), { title, owner: this.subject, shared: false, created: Date.now() }));
    });
    this.list.addEventListener('change', (e) => {
      const li = e.target.closest('li[data-id]');
      if (li && e.target.matches('[data-testid=note-share]')) {
        this.run(e.target.checked ? 'share' : 'unshare', () => this.notes.update(li.dataset.id, { shared: e.target.checked }));
      }
    });
    this.list.addEventListener('click', (e) => {
      const li = e.target.closest('li[data-id]');
      if (li && e.target.matches('[data-testid=note-delete]')) this.run('delete a note', () => this.notes.delete(li.dataset.id));
    });
  }

  /** A token for this person from the demo server. */
  async token() {
    const res = await fetch(`${DEMO_TOKEN}?name=${encodeURIComponent(this.name)}`, { method: 'POST' });
    if (!res.ok) {
      // A refusal is JSON too: {code, message, requestId} (transport.DemoTokenError).
      const e = await res.json().catch(() => null);
      throw new Error(`${DEMO_TOKEN}: HTTP ${res.status}${e?.code ? ` ${e.code}: ${e.message} (request ${e.requestId})` : ''}`);
    }
    const { token } = await res.json();
    return token;
  }

  async start() {
    const db = await open({ url: location.origin, name: `demo-notes-${this.person.slug}`, collections: [NOTES], getToken: () => this.token() });
    this.db = db;
    this.notes = db.collection(NOTES);
    db.on('status', (s) => this.renderStatus(s));
    db.on('refused', (r) => this.showError(r, 'save a note'));
    db.on('error', (e) => console.warn(`${this.person.name} (notes):`, e));
    if (this.paused) await db.pause();
    this.renderStatus(db.status);
    this.notes.subscribe({ orderBy: 'created' }, (docs) => this.render(docs));
    this.root.dataset.state = 'ready';
  }

  async setPaused(paused) {
    this.paused = paused;
    if (!this.db) return;
    if (paused) await this.db.pause();
    else this.db.resume();
  }

  async run(what, fn) {
    if (!this.db) return;
    try {
      await fn();
      this.showError(null);
    } catch (err) {
      console.error(`${this.person.name}: ${what}`, err);
      this.showError(err, what);
    }
  }

  renderStatus(s) {
    this.root.dataset.online = String(!!s.online && !s.paused);
    this.root.dataset.pending = String(s.pending ?? 0);
    if (s.lastError) this.showError(s.lastError, 'sync notes');
    else if (this.errorFrom === 'sync notes') this.showError(null);
  }

  showError(err, what) {
    this.errorFrom = err ? what : null;
    this.errorEl.hidden = !err;
    this.errorEl.textContent = err ? `Could not ${what}: ${errorText(err)}` : '';
  }

  render(docs) {
    const rows = (docs ?? []).filter((d) => d && typeof d.id === 'string').map((d) => ({
      id: d.id,
      title: typeof d.title === 'string' ? d.title : '(untitled)',
      owner: typeof d.owner === 'string' ? d.owner : '',
      shared: d.shared === true,
      created: Number.isFinite(d.created) ? d.created : 0,
    }));
    rows.sort((a, b) => a.created - b.created || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    renderRows(this.list, this.items, rows, '#note-template', (li, n) => {
      const mine = n.owner === this.subject;
      li.dataset.owner = n.owner;
      li.dataset.mine = String(mine);
      li.dataset.shared = String(n.shared);
      $('[data-testid=note-title]', li).textContent = n.title;
      const slug = n.owner.startsWith('demo:') ? n.owner.slice(5) : n.owner;
      const who = slug ? slug[0].toUpperCase() + slug.slice(1) : 'someone';
      $('[data-testid=note-owner]', li).textContent = mine ? (n.shared ? 'yours, shared' : 'yours, private') : n.shared ? `shared by ${who}` : `${who}'s`;
      const box = $('[data-testid=note-share]', li);
      box.checked = n.shared;
      // Only the owner may stop sharing: the server's scope refuses a
      // change that would take the note out of the writer's own scope.
      box.disabled = !mine;
      box.setAttribute('aria-label', `Shared: ${n.title}`);
      const del = $('[data-testid=note-delete]', li);
      del.hidden = !mine;
      del.setAttribute('aria-label', `Delete note “${n.title}”`);
    });
    $('[data-testid=notes-empty]', this.root).hidden = rows.length > 0;
    this.root.dataset.count = String(rows.length);
  }
}

/**
 * Every module of the library, as the server lists them (MODULES_FILE):
 * an offline page may need one it never loaded online (wiped.js when it
 * finds its database wiped, upgrade.js to make it again).
 * @returns {Promise<string[]>} their URLs
 */
async function libraryModules() {
  const url = new URL(LIBRARY + MODULES_FILE, location.href);
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url.pathname}: ${res.status}`);
  /** @type {string[]} */
  const modules = await res.json();
  return modules.map((m) => new URL(m, url).href);
}

/**
 * Whether u is one of the app's own files, which the page caches for
 * offline reloads: not the API (a path of any protocol version,
 * PATHS.versionPattern, or the demo's tokens), nor another origin's. The
 * service worker leaves out the same paths (workerURL).
 * @param {URL} u
 */
function ownFile(u) {
  return u.origin === location.origin && !new RegExp(PATHS.versionPattern).test(u.pathname) && u.pathname !== DEMO_TOKEN;
}

/**
 * The service worker's URL, next to base: it carries the pattern of the
 * protocol's paths (?protocol=PATHS.versionPattern), which a classic
 * worker cannot import, so that it leaves out what ownFile does.
 * @param {URL | string} base
 */
function workerURL(base) {
  const url = new URL('sw.js', base);
  url.searchParams.set('protocol', PATHS.versionPattern);
  return url;
}

/**
 * Registers the service worker that lets the page load without a server
 * (sw.js) and caches the files this page loaded that the worker did not
 * see: those loaded before it controlled the page, or while it took
 * control (the library's modules loaded on demand, such as the sync loop,
 * load then), and every module of the library, loaded or not
 * (libraryModules). Offline-ready once the worker controls the page and
 * those are cached; files loaded later are cached as they come. Best
 * effort: without it the demo still works offline for as long as the tab
 * stays open.
 */
async function cacheShell() {
  if (!('serviceWorker' in navigator) || !globalThis.caches) return;
  try {
    const sw = navigator.serviceWorker;
    const controlled = sw.controller ? Promise.resolve() : new Promise((resolve) => sw.addEventListener('controllerchange', resolve, { once: true }));
    await sw.register(workerURL(import.meta.url), { type: 'classic' });
    const cache = await caches.open(SHELL_CACHE);
    /** @type {Set<string>} what this page cached: each file once, since the cache's own fetches are resources too */
    const cached = new Set();
    /** @param {PerformanceEntryList} entries @returns {string[]} the files of this app among them, loaded (status 0: failed) */
    const loaded = (entries) => entries
      .filter((e) => {
        const status = /** @type {PerformanceResourceTiming} */ (e).responseStatus; // undefined: not told
        return status === undefined || (status >= 200 && status < 400);
      })
      .map((e) => e.name);
    /** @param {string[]} hrefs @returns {string[]} those not cached yet, of the app's own files (not the API) */
    const uncached = (hrefs) => hrefs
      .map((href) => new URL(href))
      .filter(ownFile)
      .map((u) => u.href)
      .filter((href) => !cached.has(href) && Boolean(cached.add(href)));
    new PerformanceObserver((list) => {
      const later = uncached(loaded(list.getEntries()));
      if (later.length > 0) {
        cache.addAll(later).catch((err) => {
          // Tried again the next time the page loads one of them.
          for (const href of later) cached.delete(href);
          console.warn('not cached for offline reloads:', later, err);
        });
      }
    }).observe({ type: 'resource' });
    await cache.addAll(uncached([location.href, ...loaded(performance.getEntriesByType('resource')), ...await libraryModules()]));
    await controlled;
    document.body.dataset.offlineReady = 'true';
  } catch (err) {
    console.warn('offline reloads are not available:', err);
  }
}

async function main() {
  const host = $('#panes');
  const panes = [];
  for (const person of peopleFromURL()) {
    const root = $('#pane-template').content.firstElementChild.cloneNode(true);
    host.append(root);
    panes.push(new Pane(person, root));
  }
  document.body.dataset.layout = panes.length > 1 ? 'multi' : 'single';
  // For the end-to-end tests and the curious: window.convergoDemo.panes.alice.db
  window.convergoDemo = { panes: Object.fromEntries(panes.map((p) => [p.person.slug, p])) };
  setInterval(() => panes.forEach((p) => p.renderLastSynced()), 5000);
  // The notes start beside the todos and do not hold the page up: without
  // a server (a reload offline) their token waits, and the todos work.
  for (const p of panes) {
    p.notes.start().catch((err) => {
      p.notes.root.dataset.state = 'error';
      p.notes.showError(err, 'open the notes');
    });
  }
  const results = await Promise.allSettled(panes.map((p) => p.start()));
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) {
    const fatal = $('#fatal');
    fatal.hidden = false;
    fatal.textContent = `Could not open the local database: ${errorText(failed.reason)}`;
  }
  document.body.dataset.ready = failed ? 'error' : 'true';
  await cacheShell();
}

main();
