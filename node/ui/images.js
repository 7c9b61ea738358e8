// Images: the repositories with their pull counts (Repository and
// ClusterRepository status), and each site's cache figures summed from its
// nodes' ImageStats: hit ratio and the bytes that did not cross the WAN.

import { resource, collectionPath, LiveList } from './api.js';
import { h, ago, bytes, percent, table, empty, Parts, versions } from './dom.js';

// siteFigures sums the nodes' ImageStats by site.
export function siteFigures(stats) {
  const by = new Map();
  for (const o of stats) {
    const st = o.status || {};
    const site = st.site || '—';
    if (!by.has(site)) by.set(site, { site, nodes: 0, hits: 0, misses: 0, saved: 0, fromPeers: 0, fromHub: 0, fromOrigin: 0, stored: 0 });
    const f = by.get(site);
    f.nodes++;
    f.hits += st.blobHits || 0;
    f.misses += st.blobMisses || 0;
    f.saved += st.bytesSaved || 0;
    f.fromPeers += st.bytesFromPeers || 0;
    f.fromHub += st.bytesFromHub || 0;
    f.fromOrigin += st.bytesFromOrigin || 0;
    f.stored += st.storeBytes || 0;
  }
  return [...by.values()].map((f) => ({ ...f, ratio: f.hits + f.misses ? f.hits / (f.hits + f.misses) : 0 }))
    .sort((a, b) => a.site.localeCompare(b.site));
}

function meter(x) {
  return h('div.meter', { title: percent(x) }, h('span', { style: { width: percent(x) } }), h('b', percent(x)));
}

export function imagesView(main) {
  const root = h('section.view');
  main.append(root);
  const lists = {};
  const parts = new Parts(root);
  const render = () => {
    const repos = [...(lists.repos ? lists.repos.values() : []), ...(lists.crepos ? lists.crepos.values() : [])]
      .sort((a, b) => ((b.status || {}).pullCount || 0) - ((a.status || {}).pullCount || 0));
    const maxPulls = Math.max(1, ...repos.map((r) => (r.status || {}).pullCount || 0));
    const sites = lists.stats ? siteFigures(lists.stats.values()) : [];
    const tot = sites.reduce((t, f) => ({ hits: t.hits + f.hits, misses: t.misses + f.misses, saved: t.saved + f.saved, origin: t.origin + f.fromOrigin }), { hits: 0, misses: 0, saved: 0, origin: 0 });
    const pulls = repos.reduce((n, r) => n + ((r.status || {}).pullCount || 0), 0);
    const key = Object.entries(lists).map(([k, l]) => k + l.synced + versions(l.values())).join(';');
    parts.render([['all', key, () => h('div.view',
      h('div.stats',
        h('div.stat', h('b', String(repos.length)), h('span', 'Repositories')),
        h('div.stat', h('b', String(pulls)), h('span', 'Pulls')),
        h('div.stat.tone-ok', h('b', percent(tot.hits + tot.misses ? tot.hits / (tot.hits + tot.misses) : 0)), h('span', 'Cache hit ratio')),
        h('div.stat.tone-ok', h('b', bytes(tot.saved)), h('span', 'Saved (from site peers)')),
        h('div.stat', h('b', bytes(tot.origin)), h('span', 'From origin'))),
      h('div.card', h('h2', 'Cache by site'),
        sites.length ? table([
          ['Site', (f) => f.site],
          ['Nodes', (f) => f.nodes, 'num'],
          ['Hit ratio', (f) => meter(f.ratio), 'wide'],
          ['Saved', (f) => bytes(f.saved), 'num'],
          ['From peers', (f) => bytes(f.fromPeers), 'num'],
          ['From hub', (f) => bytes(f.fromHub), 'num'],
          ['From origin', (f) => bytes(f.fromOrigin), 'num'],
          ['Stored', (f) => bytes(f.stored), 'num'],
        ], sites) : lists.stats ? empty(lists.stats, 'cache figures') : h('p.empty', 'This hub serves no ImageStats kind.')),
      h('div.card', h('h2', 'Repositories'),
        repos.length ? table([
          ['Registry', (r) => (r.spec || {}).registryName + (r.metadata.namespace ? ` (${r.metadata.namespace})` : '')],
          ['Repository', (r) => (r.spec || {}).repositoryName],
          ['Pulls', (r) => h('div.pulls', h('span', { style: { width: (100 * ((r.status || {}).pullCount || 0) / maxPulls) + '%' } }), h('b', String((r.status || {}).pullCount || 0))), 'wide'],
          ['Artifacts', (r) => (r.status || {}).artifactCount || 0, 'num'],
          ['Size', (r) => bytes((r.status || {}).sizeBytes), 'num'],
          ['Nodes', (r) => (r.status || {}).nodes || 0, 'num'],
          ['Last pulled', (r) => ago((r.status || {}).lastPulled)],
        ], repos) : lists.repos ? empty(lists.repos, 'repositories') : h('p.empty', 'Loading…')))]]);
  };
  const want = { repos: 'Repository', crepos: 'ClusterRepository', stats: 'ImageStats' };
  for (const [key, kind] of Object.entries(want)) {
    resource(kind, 'images.outpost.dev').then((r) => {
      if (stopped) return;
      if (r) lists[key] = new LiveList(collectionPath(r), {}, render);
      render();
    });
  }
  let stopped = false;
  return () => { stopped = true; Object.values(lists).forEach((l) => l.stop()); };
}
