// Tasks: the list with progress bars, and one task live: its counts as a
// bar, the per-site breakdown, and the failures grouped by identical
// outcome. Operators get retry-failed and cancel, which patch the task's
// spec as `outpost task retry --failed` and `outpost task cancel` do.

import { resource, collectionPath, objectPath, LiveList, call, ApiError } from './api.js';
import { h, ago, badge, table, empty, toast, Parts, versions } from './dom.js';

const segments = [
  ['succeeded', 'Succeeded'],
  ['failed', 'Failed'],
  ['unreachable', 'Unreachable'],
  ['canceled', 'Canceled'],
  ['running', 'Running'],
  ['queued', 'Queued'],
];

// progressBar draws counts as one stacked bar.
function progressBar(c, big) {
  const total = (c && c.total) || 0;
  return h('div.bar', { class: big && 'big', role: 'img', 'aria-label': segments.map(([k, t]) => `${t} ${(c && c[k]) || 0}`).join(', ') },
    total === 0 ? null : segments.filter(([k]) => c[k] > 0).map(([k, t]) =>
      h('span', { class: 'seg-' + k, style: { width: (100 * c[k] / total) + '%' }, title: `${t}: ${c[k]}` })));
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const done = (c) => (c.succeeded || 0) + (c.failed || 0) + (c.unreachable || 0) + (c.canceled || 0);
const finished = (phase) => ['Succeeded', 'Failed', 'Canceled'].includes(phase);
const canOperate = (me) => me.role === 'admin' || me.role === 'operator';

export function tasksView(main) {
  const root = h('section.view');
  main.append(root);
  let list;
  const parts = new Parts(root);
  const render = () => {
    const tasks = list.values().sort((a, b) => (b.metadata.creationTimestamp || '').localeCompare(a.metadata.creationTimestamp || ''));
    parts.render([['list', versions(tasks) + list.synced + !!list.error, () => h('div.card', h('h2', 'Tasks'),
      tasks.length ? table([
        ['Name', (t) => h('a', { href: '#/tasks/' + encodeURIComponent(t.metadata.name) }, t.metadata.name)],
        ['Phase', (t) => badge((t.status || {}).phase || 'Pending')],
        ['Progress', (t) => progressBar((t.status || {}).counts), 'wide'],
        ['Done', (t) => { const c = (t.status || {}).counts || {}; return `${done(c)}/${c.total || 0}`; }, 'num'],
        ['Failed', (t) => ((t.status || {}).counts || {}).failed || 0, 'num'],
        ['Sites', (t) => Object.keys((t.status || {}).sites || {}).length, 'num'],
        ['Age', (t) => ago(t.metadata.creationTimestamp)],
      ], tasks, { onclick: (t) => { location.hash = '#/tasks/' + encodeURIComponent(t.metadata.name); } }) : empty(list, 'tasks'))]]);
  };
  resource('Task', 'ota.outpost.dev').then((r) => {
    if (!r) { root.replaceChildren(h('p.empty', 'This hub serves no Task kind.')); return; }
    if (!stopped) list = new LiveList(collectionPath(r), {}, render);
  });
  let stopped = false;
  return () => { stopped = true; list && list.stop(); };
}

// outcome is what a finished device's result says, for grouping: the
// last step that ran, its exit code and reason, and its output.
function outcome(st) {
  const steps = (st.steps || []).filter((x) => x.phase && x.phase !== 'Skipped');
  const last = steps[steps.length - 1];
  if (!last) return { step: '', detail: [st.reason, st.message].filter(Boolean).join(': '), output: '' };
  const detail = [last.exitCode !== undefined && last.exitCode !== null ? 'exit ' + last.exitCode : '',
    last.reason && last.reason !== 'ExitCode' ? last.reason : '', last.error || ''].filter(Boolean).join(': ');
  const out = ((last.stderr && last.stderr.head) || '').trim() || ((last.stdout && last.stdout.head) || '').trim();
  return { step: last.name, detail, output: out };
}

function mask(o, node) {
  if (!node) return o;
  const m = (x) => x.split(node).join('‹node›');
  return { step: o.step, detail: m(o.detail), output: m(o.output) };
}

// failureGroups groups the devices that did not succeed by identical
// outcome, largest group first.
export function failureGroups(results, attempt) {
  const groups = new Map();
  for (const r of results) {
    const st = r.status || {};
    if (!['Failed', 'TimedOut', 'Unreachable'].includes(st.phase)) continue;
    // A retried device's earlier failure is not a failure of this attempt.
    if (attempt && (st.attempt || 1) < attempt) continue;
    // Outcomes that differ only by the device's own name are the same
    // outcome ("node edge-2 was offline ..."): the name is masked.
    const o = mask(outcome(st), r.spec.node);
    const key = [st.phase, o.step, o.detail, o.output].join('\u0000');
    if (!groups.has(key)) groups.set(key, { phase: st.phase, ...o, nodes: [] });
    groups.get(key).nodes.push(r.spec.node);
  }
  return [...groups.values()].sort((a, b) => b.nodes.length - a.nodes.length);
}

const back = () => h('a.back', { href: '#/tasks' }, '← Tasks');

export function taskView(main, { me, params: [name] }) {
  const root = h('section.view');
  main.append(root);
  let task;
  let results;
  let taskRes;
  let confirmCancel = false;
  let busy = false;

  const steer = async (spec, what) => {
    busy = true;
    render();
    try {
      // The resourceVersion turns a concurrent change into a conflict, not
      // a lost update; one conflict is retried on a fresh copy.
      for (let attempt = 0; ; attempt++) {
        const cur = await call('GET', objectPath(taskRes, { metadata: { name } }));
        try {
          await call('PATCH', objectPath(taskRes, cur), { metadata: { resourceVersion: cur.metadata.resourceVersion }, spec: spec(cur) }, 'application/merge-patch+json');
          break;
        } catch (e) {
          if (!(e instanceof ApiError) || e.code !== 409 || attempt > 0) throw e;
        }
      }
      toast(`task/${name} ${what}`);
    } catch (e) {
      toast(`Could not ${what.replace(/ed$/, '')} task/${name}: ${e.message}`, true);
    } finally {
      busy = false;
      confirmCancel = false;
      render();
    }
  };

  const parts = new Parts(root);
  const render = () => {
    const t = task && task.values()[0];
    if (!t) {
      const msg = task && task.synced ? `Task ${name} does not exist.` : 'Loading…';
      parts.render([['back', '', back], ['missing', msg, () => h('p.empty', msg)]]);
      return;
    }
    const st = t.status || {};
    const c = st.counts || {};
    const spec = t.spec || {};
    const operate = canOperate(me);
    const retryable = (c.failed || 0) + (c.unreachable || 0) > 0 && !spec.canceled;
    const cancelable = !finished(st.phase) && !spec.canceled;
    const sites = Object.entries(st.sites || {}).sort(([a], [b]) => a.localeCompare(b));
    const groups = results ? failureGroups(results.values(), st.attempt) : [];
    const failedDevices = groups.reduce((n, g) => n + g.nodes.length, 0);
    const head = { phase: st.phase, attempt: st.attempt, halted: spec.halted, operate, retryable, cancelable, busy, confirmCancel };
    parts.render([
      ['back', '', back],
      ['head', JSON.stringify(head), () => h('div.head',
        h('h1', t.metadata.name),
        badge(st.phase || 'Pending'),
        st.attempt > 1 && h('span.muted', `attempt ${st.attempt}`),
        spec.halted && badge('halted'),
        h('span.spacer'),
        operate && retryable && h('button#retry', { disabled: busy, onclick: () => steer((cur) => ({ retry: ((cur.spec || {}).retry || 0) + 1 }), 'retried') }, 'Retry failed'),
        operate && cancelable && h('button#cancel.danger', {
          disabled: busy,
          onclick: () => {
            if (!confirmCancel) {
              confirmCancel = true;
              render();
              setTimeout(() => { if (confirmCancel) { confirmCancel = false; render(); } }, 4000);
              return;
            }
            steer(() => ({ canceled: true }), 'canceled');
          },
        }, confirmCancel ? 'Confirm cancel' : 'Cancel task'))],
      ['progress', JSON.stringify([c, st.startTime]), () => h('div.card#progress',
        h('div.progress-head', h('b', `${done(c)} of ${c.total || 0} devices finished`),
          h('span.muted', st.startTime ? `started ${ago(st.startTime)} ago` : 'not started')),
        progressBar(c, true),
        h('div.legend', segments.map(([k, t2]) => h('span', h('i', { class: 'seg-' + k }), `${t2} `, h('b', { 'data-count': k }, String(c[k] || 0))))))],
      st.notFound && ['notfound', JSON.stringify(st.notFound), () => h('div.card.notfound#notfound',
        h('b', 'Not found, not run: '),
        [...(st.notFound.nodes || []).map((n) => 'node ' + n), ...(st.notFound.sites || []).map((x) => 'site ' + x)].join(', '),
        h('span.muted', ' (named in the targets, matched by no node)'))],
      ['sites', JSON.stringify(sites), () => h('div.card', h('h2', 'Sites'),
        sites.length ? table([
          ['Site', ([s]) => s],
          ['Progress', ([, sc]) => progressBar(sc), 'wide'],
          ['Done', ([, sc]) => `${done(sc)}/${sc.total}`, 'num'],
          ['Running', ([, sc]) => sc.running, 'num'],
          ['Failed', ([, sc]) => sc.failed + sc.unreachable, 'num'],
        ], sites) : h('p.empty', 'No devices yet.'))],
      ['failures', JSON.stringify([groups, results && results.synced]), () => h('div.card#failures',
        h('h2', 'Failures', groups.length > 0 && h('span.muted', ` ${plural(failedDevices, 'device')} in ${plural(groups.length, 'group')}`)),
        groups.length ? groups.map((g) => h('div.group',
          h('div.group-head', badge(g.phase), h('b', plural(g.nodes.length, 'device')),
            g.step && h('span', 'step ', h('code', g.step)), g.detail && h('span.muted', g.detail)),
          g.output && h('pre', g.output.length > 4000 ? g.output.slice(0, 4000) + '\n…' : g.output),
          h('div.chips', g.nodes.sort().slice(0, 50).map((n) => h('span.chip', n)),
            g.nodes.length > 50 && h('span.muted', ` and ${g.nodes.length - 50} more`))))
          : h('p.empty', results && results.synced ? 'No failed device.' : 'Loading…'))],
      ['steps', JSON.stringify(spec.steps || []), () => h('div.card', h('h2', 'Steps'),
        table([
          ['Name', (x) => x.name],
          ['Type', (x) => x.type],
          ['What', (x) => h('code', x.command ? x.command.join(' ') : x.script || x.path || '')],
        ], spec.steps || []))],
    ]);
  };

  resource('Task', 'ota.outpost.dev').then(async (r) => {
    taskRes = r;
    if (!r) { root.replaceChildren(h('p.empty', 'This hub serves no Task kind.')); return; }
    const dr = await resource('DeviceResult', 'ota.outpost.dev');
    if (stopped) return;
    task = new LiveList(collectionPath(r), { fieldSelector: 'metadata.name=' + name }, render);
    if (dr) results = new LiveList(collectionPath(dr), { labelSelector: 'ota.outpost.dev/task=' + name }, render);
  });
  render();
  let stopped = false;
  return () => { stopped = true; task && task.stop(); results && results.stop(); };
}
