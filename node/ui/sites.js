// Sites and nodes: a map of the sites coloured by status, then the sites'
// and nodes' tables. A site's status: ok (its link is up and every node is
// alive), degraded (up, some node not alive), down (link lost), or new (it
// never reported).

import { resource, collectionPath, LiveList } from './api.js';
import { h, s, ago, badge, table, empty, Parts, versions } from './dom.js';

const statusWords = { ok: 'ok', degraded: 'degraded', down: 'down', new: 'new' };

function siteOf(node) {
  return (node.status && node.status.site) || (node.metadata.labels || {})['outpost.dev/site'] || '';
}

// siteStatus derives a site's status word from its object and its nodes.
export function siteStatus(site, nodes) {
  const st = site.status;
  if (!st || (!st.connected && !st.lastSeen && !st.leader)) return statusWords.new;
  if (!st.connected) return statusWords.down;
  if (nodes.some((n) => (n.status || {}).state !== 'alive')) return statusWords.degraded;
  return statusWords.ok;
}

const toneOf = { ok: 'ok', degraded: 'warn', down: 'bad', new: 'idle' };

// coords parses a location of the form "lat,lon" (decimal degrees).
function coords(location) {
  const m = /^\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*$/.exec(location || '');
  if (!m) return null;
  const lat = Number(m[1]);
  const lon = Number(m[2]);
  return Math.abs(lat) <= 90 && Math.abs(lon) <= 180 ? { lat, lon } : null;
}

// siteMap draws the sites as tiles: placed by coordinates when the
// locations have them (fitted to the fleet's extent), else in a grid
// grouped by location.
function siteMap(rows, onpick, picked) {
  const placed = rows.filter((r) => coords(r.site.spec && r.site.spec.location));
  const W = 960;
  const tile = 26;
  const gap = 6;
  const items = [];
  let H = 0;
  if (placed.length > 0) {
    const pts = placed.map((r) => coords(r.site.spec.location));
    const minLon = Math.min(...pts.map((p) => p.lon)) - 2;
    const maxLon = Math.max(...pts.map((p) => p.lon)) + 2;
    const minLat = Math.min(...pts.map((p) => p.lat)) - 2;
    const maxLat = Math.max(...pts.map((p) => p.lat)) + 2;
    const geoH = 320;
    const sx = (W - 80) / Math.max(maxLon - minLon, 1);
    const sy = (geoH - 40) / Math.max(maxLat - minLat, 1);
    const k = Math.min(sx, sy);
    const left = (W - (maxLon - minLon) * k) / 2; // centred
    items.push(s('rect', { x: 0, y: 0, width: W, height: geoH, class: 'map-sea', rx: 8 }));
    for (let lon = Math.ceil(minLon / 5) * 5; lon <= maxLon; lon += 5) {
      const x = left + (lon - minLon) * k;
      if (x < W) {
        items.push(s('line', { x1: x, y1: 0, x2: x, y2: geoH, class: 'map-grid' }),
          s('text', { x: x + 3, y: geoH - 6, class: 'map-axis' }, `${Math.abs(lon)}°${lon < 0 ? 'W' : 'E'}`));
      }
    }
    for (let lat = Math.ceil(minLat / 5) * 5; lat <= maxLat; lat += 5) {
      const y = geoH - 20 - (lat - minLat) * k;
      if (y > 0) {
        items.push(s('line', { x1: 0, y1: y, x2: W, y2: y, class: 'map-grid' }),
          s('text', { x: 4, y: y - 3, class: 'map-axis' }, `${Math.abs(lat)}°${lat < 0 ? 'S' : 'N'}`));
      }
    }
    placed.forEach((r, i) => {
      const p = pts[i];
      const x = left + (p.lon - minLon) * k;
      const y = geoH - 20 - (p.lat - minLat) * k;
      items.push(pin(r, x, y, onpick, picked));
    });
    H = geoH + gap;
  }
  const rest = rows.filter((r) => !placed.includes(r));
  const groups = new Map();
  for (const r of rest) {
    const loc = (r.site.spec && r.site.spec.location) || 'no location';
    if (!groups.has(loc)) groups.set(loc, []);
    groups.get(loc).push(r);
  }
  const perRow = Math.floor((W - 150) / (tile + gap));
  for (const [loc, list] of [...groups.entries()].sort()) {
    items.push(s('text', { x: 0, y: H + 18, class: 'map-label' }, loc));
    list.forEach((r, i) => {
      const x = 150 + (i % perRow) * (tile + gap);
      const y = H + 2 + Math.floor(i / perRow) * (tile + gap);
      items.push(s('g', { class: 'tile' + (picked === r.site.metadata.name ? ' picked' : ''), 'data-site': r.site.metadata.name },
        s('rect', { x, y, width: tile, height: tile, rx: 5, class: 'fill-' + toneOf[r.status] }),
        s('title', {}, `${r.site.metadata.name}: ${r.status}, ${r.nodes.length} nodes`)));
    });
    H += Math.ceil(list.length / perRow) * (tile + gap) + gap;
  }
  const svg = s('svg', { viewBox: `0 0 ${W} ${Math.max(H, 40)}`, class: 'map', role: 'img', 'aria-label': 'Sites by status' }, ...items);
  svg.addEventListener('click', (e) => {
    const g = e.target.closest('[data-site]');
    onpick(g ? g.dataset.site : null);
  });
  return svg;
}

function pin(r, x, y, onpick, picked) {
  const name = r.site.metadata.name;
  return s('g', { class: 'tile' + (picked === name ? ' picked' : ''), 'data-site': name },
    s('circle', { cx: x, cy: y, r: 9, class: 'fill-' + toneOf[r.status] }),
    s('text', { x: x + 13, y: y + 4, class: 'map-pin' }, name),
    s('title', {}, `${name}: ${r.status}, ${r.nodes.length} nodes (${r.site.spec.location})`));
}

export function sitesView(main) {
  let sites;
  let nodes;
  let picked = null;
  const root = h('section.view');
  main.append(root);
  const parts = new Parts(root);

  const render = () => {
    if (!sites || !nodes) return;
    const all = nodes.values();
    const rows = sites.values().map((site) => {
      const ns = all.filter((n) => siteOf(n) === site.metadata.name);
      return { site, nodes: ns, status: siteStatus(site, ns) };
    }).sort((a, b) => a.site.metadata.name.localeCompare(b.site.metadata.name));
    const count = (st) => rows.filter((r) => r.status === st).length;
    const alive = all.filter((n) => (n.status || {}).state === 'alive').length;
    const shownNodes = all.filter((n) => !picked || siteOf(n) === picked)
      .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    const pick = (name) => { picked = name; render(); };
    const mapKey = JSON.stringify([rows.map((r) => [r.site.metadata.name, r.status, r.nodes.length, (r.site.spec || {}).location]), picked, sites.synced]);
    parts.render([
      ['stats', JSON.stringify([rows.map((r) => r.status), all.length, alive]), () => h('div.stats',
        stat('Sites', rows.length),
        stat('Up', count('ok'), 'ok'),
        stat('Degraded', count('degraded'), 'warn'),
        stat('Down', count('down'), 'bad'),
        stat('Nodes', all.length),
        stat('Nodes alive', alive, alive === all.length ? 'ok' : 'warn'))],
      ['map', mapKey, () => h('div.card',
        h('h2', 'Sites by status', h('span.legend', ['ok', 'degraded', 'down', 'new'].map((w) =>
          h('span', h('i', { class: 'fill-' + toneOf[w] }), w)))),
        rows.length ? siteMap(rows, (name) => pick(name === picked ? null : name), picked) : empty(sites, 'sites'))],
      ['sites', mapKey + versions(rows.map((r) => r.site)), () => h('div.card',
        h('h2', 'Sites'),
        rows.length ? table([
          ['Name', (r) => r.site.metadata.name],
          ['Status', (r) => badge(r.status === 'ok' ? 'connected' : r.status)],
          ['Location', (r) => (r.site.spec && r.site.spec.location) || '—'],
          ['Nodes', (r) => (r.site.status && r.site.status.nodeCount) ?? r.nodes.length, 'num'],
          ['Leader', (r) => (r.site.status && r.site.status.leader) || '—'],
          ['Versions', (r) => ((r.site.status && r.site.status.versions) || []).join(', ') || '—'],
          ['Last seen', (r) => ago(r.site.status && r.site.status.lastSeen)],
        ], rows, { onclick: (r) => pick(r.site.metadata.name) }) : empty(sites, 'sites'))],
      ['nodes', versions(shownNodes) + picked + nodes.synced, () => h('div.card',
        h('h2', picked ? `Nodes of ${picked}` : 'Nodes', picked && h('button.link', { onclick: () => pick(null) }, 'show all')),
        shownNodes.length ? table([
          ['Name', (n) => n.metadata.name],
          ['Site', siteOf],
          ['Role', (n) => (n.status || {}).role || '—'],
          ['State', (n) => badge((n.status || {}).state || 'unknown')],
          ['Version', (n) => (n.status || {}).version || '—'],
          ['Arch', (n) => [(n.status || {}).os, (n.status || {}).arch].filter(Boolean).join('/') || '—'],
          ['Raft', (n) => ((n.status || {}).raft || {}).state || '—'],
          ['Last seen', (n) => ago((n.status || {}).lastSeen || (n.status || {}).heartbeatTime)],
        ], shownNodes) : empty(nodes, 'nodes'))],
    ]);
  };

  Promise.all([resource('Site', 'core.outpost.dev'), resource('Node', 'core.outpost.dev')]).then(([sr, nr]) => {
    if (!sr || !nr) {
      root.replaceChildren(h('p.empty', 'This hub serves no Site or Node kind.'));
      return;
    }
    if (stopped) return;
    sites = new LiveList(collectionPath(sr), {}, render);
    nodes = new LiveList(collectionPath(nr), {}, render);
  }).catch((e) => root.replaceChildren(h('p.empty.tone-bad', 'Cannot load sites: ' + e.message)));
  let stopped = false;
  return () => { stopped = true; sites && sites.stop(); nodes && nodes.stop(); };
}

function stat(label, value, toneClass) {
  return h('div.stat', { class: toneClass && 'tone-' + toneClass }, h('b', String(value)), h('span', label));
}
