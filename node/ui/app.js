// The dashboard's shell: sign-in, the header, and a hash router that mounts
// one view at a time. Each view returns a function that stops its watches.

import { token, whoami, setUnauthorizedHandler, onLiveChange } from './api.js';
import { h } from './dom.js';
import { sitesView } from './sites.js';
import { tasksView, taskView } from './tasks.js';
import { clustersView } from './clusters.js';
import { imagesView } from './images.js';

const main = document.getElementById('main');
const header = document.querySelector('header.top');
let me = null;
let stopView = () => {};

const routes = [
  [/^#\/sites$/, () => sitesView],
  [/^#\/tasks$/, () => tasksView],
  [/^#\/tasks\/([^/]+)$/, () => taskView],
  [/^#\/clusters$/, () => clustersView],
  [/^#\/images$/, () => imagesView],
];

function route() {
  stopView();
  stopView = () => {};
  if (!me) return signIn();
  const hash = location.hash || '#/sites';
  for (const [re, view] of routes) {
    const m = hash.match(re);
    if (m) {
      document.querySelectorAll('[data-nav]').forEach((a) =>
        a.classList.toggle('active', hash.startsWith('#/' + a.dataset.nav)));
      main.replaceChildren();
      stopView = view()(main, { me, params: m.slice(1).map(decodeURIComponent) }) || (() => {});
      return;
    }
  }
  location.hash = '#/sites';
}

// signIn shows the token form; a token that whoami accepts is kept in the
// tab's sessionStorage (gone when the tab closes).
function signIn(message) {
  header.hidden = true;
  const input = h('input#token', { type: 'password', autocomplete: 'off', spellcheck: 'false', placeholder: 'name.secret', required: true, 'aria-label': 'Access token' });
  const err = h('p.error', { role: 'alert' }, message || '');
  const form = h('form.signin', {
    onsubmit: async (e) => {
      e.preventDefault();
      token.set(input.value.trim());
      try {
        await start();
      } catch (ex) {
        token.clear();
        err.textContent = ex.code === 401 ? 'That token is not valid: ' + ex.message : 'Cannot reach the hub: ' + ex.message;
      }
    },
  },
  h('img', { src: 'icon.svg', alt: '', width: 40, height: 40 }),
  h('h1', 'Sign in to Outpost'),
  h('label', { for: 'token' }, 'Access token'),
  input,
  h('button#signin.primary', { type: 'submit' }, 'Sign in'),
  err,
  h('p.hint', 'Ask an admin for a token (', h('code', 'outpost access create NAME --role viewer'),
    '), or use the hub\'s admin token in ', h('code', '<data-dir>/admin.yaml'), '.'));
  main.replaceChildren(form);
  input.focus();
}

async function start() {
  me = await whoami();
  header.hidden = false;
  document.getElementById('who').replaceChildren(me.name + ' ', h('span.badge.role', me.role));
  document.body.dataset.role = me.role;
  route();
}

function signOut(message) {
  me = null;
  document.getElementById('toast').className = '';
  token.clear();
  stopView();
  stopView = () => {};
  signIn(message);
}

setUnauthorizedHandler((msg) => { if (me) signOut('Signed out: ' + msg); });
onLiveChange((ok) => document.getElementById('live').classList.toggle('down', !ok));
document.getElementById('signout').addEventListener('click', () => signOut());
window.addEventListener('hashchange', route);

if (token.get()) {
  start().catch(() => signOut());
} else {
  signIn();
}
