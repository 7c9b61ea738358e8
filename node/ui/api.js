// The admin API as the dashboard uses it: bearer token from sessionStorage,
// discovery, and live lists kept current by the watch API.

const tokenKey = 'outpost.token';

export const token = {
  get: () => sessionStorage.getItem(tokenKey) || '',
  set: (t) => sessionStorage.setItem(tokenKey, t),
  clear: () => sessionStorage.removeItem(tokenKey),
};

// ApiError is a failed call; message is the server's Status message.
export class ApiError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(f) { onUnauthorized = f; }

function headers(extra) {
  return { Authorization: 'Bearer ' + token.get(), Accept: 'application/json', ...extra };
}

async function failure(resp) {
  let msg = resp.statusText;
  try {
    const s = await resp.json();
    if (s.message) msg = s.message;
  } catch { /* not a Status */ }
  if (resp.status === 401) onUnauthorized(msg);
  return new ApiError(resp.status, msg);
}

// call sends one request and returns the decoded JSON answer.
export async function call(method, path, body, contentType = 'application/json') {
  const init = { method, headers: headers(body ? { 'Content-Type': contentType } : {}) };
  if (body) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp);
  return resp.json();
}

// whoami returns {name, role} of the signed-in token.
export const whoami = () => call('GET', '/outpost/v1/whoami');

let resources;

// discover lists every served resource once: {group, version, kind,
// plural, namespaced}.
export async function discover() {
  if (resources) return resources;
  const groups = await call('GET', '/apis');
  const lists = await Promise.all(groups.groups.map((g) =>
    call('GET', '/apis/' + g.preferredVersion.groupVersion).then((l) => [g, l])));
  resources = [];
  for (const [g, l] of lists) {
    for (const r of l.resources) {
      if (r.name.includes('/')) continue;
      resources.push({ group: g.name, version: g.preferredVersion.version, kind: r.kind, plural: r.name, namespaced: r.namespaced });
    }
  }
  return resources;
}

// resource finds a served kind by name (and group, when given); null when
// the hub does not serve it.
export async function resource(kind, group) {
  const all = await discover();
  return all.find((r) => r.kind === kind && (!group || r.group === group)) || null;
}

export function collectionPath(r) {
  return `/apis/${r.group}/${r.version}/${r.plural}`;
}

export function objectPath(r, obj) {
  const ns = r.namespaced && obj.metadata.namespace ? `/namespaces/${encodeURIComponent(obj.metadata.namespace)}` : '';
  return `/apis/${r.group}/${r.version}${ns}/${r.plural}/${encodeURIComponent(obj.metadata.name)}`;
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

// liveState reports whether every watch is streaming, for the header dot.
const streams = new Map();
let liveListener = () => {};
export function onLiveChange(f) { liveListener = f; }
function setLive(id, ok) {
  if (ok === null) streams.delete(id); else streams.set(id, ok);
  liveListener([...streams.values()].every(Boolean));
}

// LiveList is the objects of a collection, kept current by a watch:
// newline-delimited JSON events read from a streaming fetch. It resumes from
// the last resourceVersion when the stream ends and relists when that
// version is gone. onChange is called (coalesced) after changes.
export class LiveList {
  constructor(path, params, onChange) {
    this.path = path;
    this.params = params || {};
    this.onChange = onChange;
    this.items = new Map();
    this.synced = false;
    this.error = null;
    this.abort = new AbortController();
    this.id = Symbol(path);
    this.pending = null;
    this.run();
  }

  values() { return [...this.items.values()]; }

  stop() {
    this.abort.abort();
    clearTimeout(this.pending);
    setLive(this.id, null);
  }

  changed() {
    if (this.pending) return;
    // Big lists redraw less often: a fleet of thousands changes constantly.
    const delay = this.items.size > 500 ? 500 : 40;
    this.pending = setTimeout(() => { this.pending = null; this.onChange(this); }, delay);
  }

  async run() {
    const signal = this.abort.signal;
    let rv = '';
    while (!signal.aborted) {
      const q = new URLSearchParams({ ...this.params, watch: 'true' });
      if (rv) q.set('resourceVersion', rv);
      try {
        const resp = await fetch(this.path + '?' + q, { headers: headers(), signal });
        if (!resp.ok) {
          const err = await failure(resp);
          if (err.code === 401) return;
          throw err;
        }
        if (!rv) { this.items.clear(); }
        this.error = null;
        setLive(this.id, true);
        rv = await this.read(resp.body, rv);
        // An initial list with nothing in it sends no event.
        this.synced = true;
        this.changed();
      } catch (e) {
        if (signal.aborted) return;
        this.error = e;
        setLive(this.id, false);
        if (e.code === 410) rv = '';
        this.changed();
        await sleep(2000, signal);
        continue;
      }
      await sleep(300, signal);
    }
  }

  // read applies events until the stream ends and returns the last
  // resourceVersion; an ERROR event with 410 forces a relist.
  async read(body, rv) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    // The server flushes the initial ADDED events at once; mark the list
    // synced a moment after the first chunk so empty lists render too.
    const syncTimer = setTimeout(() => { this.synced = true; this.changed(); }, 150);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return rv;
        buf += value;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const ev = JSON.parse(line);
          if (ev.type === 'ERROR') throw new ApiError(ev.object.code || 500, ev.object.message || 'watch failed');
          const o = ev.object;
          const key = (o.metadata.namespace || '') + '/' + o.metadata.name;
          if (ev.type === 'DELETED') this.items.delete(key); else this.items.set(key, o);
          rv = o.metadata.resourceVersion || rv;
          this.changed();
        }
      }
    } finally {
      clearTimeout(syncTimer);
    }
  }
}
