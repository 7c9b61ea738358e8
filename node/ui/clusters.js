// Clusters: each cluster's conditions drawn as a chain of stages. The kind
// is found through discovery (any served kind named Cluster), so the view
// needs nothing beyond the generic API.

import { resource, collectionPath, LiveList } from './api.js';
import { h, ago, badge, empty, Parts } from './dom.js';

// stageOrder is the order a cluster passes its conditions in; condition
// types not listed follow in the order the object has them.
const stageOrder = ['Initialized', 'AgentAvailable', 'CoreReady', 'Ready', 'Schedulable'];

// stages orders a cluster's conditions as its chain.
export function stages(conditions) {
  const byType = new Map((conditions || []).map((c) => [c.type, c]));
  const out = stageOrder.filter((t) => byType.has(t)).map((t) => byType.get(t));
  for (const c of conditions || []) if (!stageOrder.includes(c.type)) out.push(c);
  return out;
}

const toneOf = { True: 'ok', False: 'bad', Unknown: 'warn' };

function chain(conditions) {
  const list = stages(conditions);
  if (list.length === 0) return h('p.muted', 'No conditions yet: the controller has not looked at this cluster.');
  const blocked = list.find((c) => c.status !== 'True');
  return h('div',
    h('ol.chain', list.map((c) => h('li.stage', { class: 'tone-' + (toneOf[c.status] || 'idle'), title: c.message || '', 'data-type': c.type, 'data-status': c.status },
      h('span.dot', c.status === 'True' ? '✓' : c.status === 'False' ? '✕' : '…'),
      h('b', c.type),
      h('small', c.reason || c.status),
      h('small.muted', ago(c.lastTransitionTime))))),
    blocked && h('p.blocked', { class: 'tone-' + (toneOf[blocked.status] || 'idle') },
      h('b', blocked.type + ': '), blocked.reason ? blocked.reason + (blocked.message ? ' — ' + blocked.message : '') : blocked.message || blocked.status));
}

export function clustersView(main) {
  const root = h('section.view');
  main.append(root);
  let list;
  const parts = new Parts(root);
  const render = () => {
    const items = list.values().sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    parts.render([['title', '', () => h('h1', 'Clusters')],
      ...(items.length ? items.map((c) => [c.metadata.name, c.metadata.resourceVersion, () => {
        const st = c.status || {};
        const spec = c.spec || {};
        const ready = (st.conditions || []).find((x) => x.type === 'Ready');
        return h('div.card.cluster', { 'data-cluster': c.metadata.name },
          h('div.head', h('h2', c.metadata.name), badge(ready ? (ready.status === 'True' ? 'ready' : ready.status === 'False' ? 'not ready' : 'unknown') : 'pending'),
            h('span.spacer'),
            h('span.muted', [(spec.connection || {}).type, spec.provider, st.kubernetesVersion, st.nodeCount !== undefined ? st.nodeCount + ' nodes' : '', st.region].filter(Boolean).join(' · '))),
          chain(st.conditions));
      }]) : [['empty', String(list.synced) + !!list.error, () => empty(list, 'clusters')]])]);
  };
  resource('Cluster').then((r) => {
    if (!r) {
      root.replaceChildren(h('h1', 'Clusters'), h('p.empty', 'This hub serves no Cluster kind.'));
      return;
    }
    if (!stopped) list = new LiveList(collectionPath(r), {}, render);
  });
  let stopped = false;
  return () => { stopped = true; list && list.stop(); };
}
