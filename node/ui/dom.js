// Small DOM and formatting helpers shared by the views.

// h builds an element: h('div.card#id', {onclick, title, ...}, children...).
// Attributes starting with "on" are listeners; "class" may be an array.
export function h(tag, attrs, ...children) {
  const [name, ...rest] = tag.split(/(?=[.#])/);
  const el = document.createElement(name || 'div');
  for (const r of rest) {
    if (r[0] === '.') el.classList.add(r.slice(1)); else el.id = r.slice(1);
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.classList.add(...[v].flat().filter(Boolean));
    else if (k === 'style') Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

const svgNS = 'http://www.w3.org/2000/svg';

// s builds an SVG element with attributes.
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

// ago prints how long ago an RFC 3339 time was: 5s, 3m, 2h, 4d.
export function ago(ts) {
  if (!ts) return '—';
  const secs = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (secs < 60) return Math.floor(secs) + 's';
  if (secs < 3600) return Math.floor(secs / 60) + 'm';
  if (secs < 86400) return Math.floor(secs / 3600) + 'h';
  return Math.floor(secs / 86400) + 'd';
}

// bytes prints a byte count in binary units.
export function bytes(n) {
  n = Number(n) || 0;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
}

export function percent(x) {
  return (Math.round((Number(x) || 0) * 1000) / 10) + '%';
}

// tone maps a state word to a colour class: ok, warn, bad or idle.
export function tone(word) {
  switch (String(word).toLowerCase()) {
    case 'true': case 'alive': case 'succeeded': case 'ready': case 'connected': case 'leader': case 'ok':
      return 'ok';
    case 'false': case 'not ready': case 'dead': case 'failed': case 'timedout': case 'unreachable': case 'disconnected': case 'down': case 'left':
      return 'bad';
    case 'running': case 'pending': case 'halted': case 'suspect': case 'unknown': case 'degraded': case 'queued':
      return 'warn';
  }
  return 'idle';
}

export function badge(word, title) {
  return h('span.badge', { class: 'tone-' + tone(word), title }, word || '—');
}

// table renders rows under a header; cols are [title, cell(row), class?].
export function table(cols, rows, opts = {}) {
  return h('table', { class: opts.class },
    h('thead', h('tr', cols.map(([t, , c]) => h('th', { class: c }, t)))),
    h('tbody', rows.map((r) => h('tr', { onclick: opts.onclick && (() => opts.onclick(r)), class: opts.onclick && 'clickable' },
      cols.map(([, f, c]) => h('td', { class: c }, f(r)))))));
}

// empty is the placeholder of a list with nothing in it (or not loaded).
export function empty(list, what) {
  if (list.error) return h('p.empty.tone-bad', `Cannot load ${what}: ${list.error.message}`);
  return h('p.empty', list.synced ? `No ${what} yet.` : 'Loading…');
}

let toastTimer;
export function toast(msg, isError) {
  const el = document.getElementById('toast');
  el.textContent = msg;
  el.className = isError ? 'show tone-bad' : 'show';
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = ''; }, 5000);
}

// Parts keeps a view's parts across renders: each part is rebuilt only
// when its key (a string of what it shows) changed, so a live update
// leaves the rest of the page, and a button under the pointer, alone.
export class Parts {
  constructor(root) {
    this.root = root;
    this.parts = new Map();
  }

  // render shows the parts [id, key, build] in order.
  render(list) {
    const els = list.filter(Boolean).map(([id, key, build]) => {
      const p = this.parts.get(id);
      if (p && p.key === key) return p.el;
      const el = build();
      this.parts.set(id, { key, el });
      return el;
    });
    const kids = this.root.children;
    if (els.length !== kids.length || els.some((e, i) => kids[i] !== e)) this.root.replaceChildren(...els);
  }
}

// versions is a key of a list of objects: their names and resourceVersions.
export function versions(objs) {
  return objs.map((o) => o.metadata.name + '@' + o.metadata.resourceVersion).join(',');
}
