// Airlock audit console (read-only). Plain browser JavaScript, no build step.
// Every value from the server is put into the page with textContent (never innerHTML): statement
// text, identities and reasons come from clients and may contain markup.


const TOKEN_KEY = 'airlock.console.token';
const $ = (id) => document.getElementById(id);

/** el('td', {class: 'x'}, 'text', otherNode): children that are strings become text nodes. */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class AuthError extends Error {
  constructor(message, login) { super(message); this.login = login; }
}

/** The Bearer header for a pasted token; without one, the IdP sign-in's cookie (same origin) is used. */
function authHeaders() { return token() ? { authorization: 'Bearer ' + token() } : {}; }

async function api(path) {
  const res = await fetch('/api/' + path, { headers: authHeaders(), credentials: 'same-origin' });
  const body = await res.json().catch(() => ({ error: 'bad response' }));
  if (res.status === 401 || res.status === 403) throw new AuthError(body.error || 'not allowed', body.login);
  if (!res.ok) throw new Error(body.error || 'HTTP ' + res.status);
  return body;
}

function when(iso) { return iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '—'; }
function short(id) { return id ? id.slice(0, 8) : ''; }
function decisionTag(d) { return el('span', { class: 'decision ' + d, 'data-decision': d }, d); }

function showLogin(message, oidcLogin) {
  $('nav').hidden = true;
  $('view').replaceChildren();
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  if (oidcLogin) {
    $('oidc-login').hidden = false;
    $('oidc-login-link').setAttribute('href', oidcLogin);
  }
}

async function login(ev) {
  ev.preventDefault();
  const t = $('token').value.trim();
  if (!t) return;
  sessionStorage.setItem(TOKEN_KEY, t);
  $('token').value = '';
  await route();
}

async function logout() {
  const hadToken = !!token();
  sessionStorage.removeItem(TOKEN_KEY);
  if (!hadToken) await fetch('/logout', { method: 'POST', credentials: 'same-origin' }).catch(() => undefined);
  showLogin('Logged out.', $('oidc-login-link').getAttribute('href'));
}

async function refreshChainBadge() {
  const b = $('chain-badge');
  try {
    const v = await api('verify');
    b.textContent = v.ok ? 'chain verified' : 'chain BROKEN';
    b.className = 'badge ' + (v.ok ? 'ok' : 'bad');
  } catch (e) {
    if (e instanceof AuthError) throw e;
    b.textContent = 'chain: ?';
  }
}

function parseHash() {
  const h = location.hash.replace(/^#\/?/, '');
  const [path, query] = h.split('?');
  return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || '') };
}

async function route() {
  const { parts, params } = parseHash();
  const view = parts[0] || 'sessions';
  try {
    const me = await api('me');
    $('login').hidden = true;
    $('nav').hidden = false;
    $('who').textContent = me.identity + ' (' + me.groups.join(', ') + ')';
    for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === (view === 'session' ? 'sessions' : view));
    const target = $('view');
    target.replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
    let content;
    if (view === 'session' && parts[1]) content = await sessionView(parts[1]);
    else if (view === 'approvals') content = await approvalsView();
    else if (view === 'verify') content = await verifyView();
    else content = await sessionsView(params);
    target.replaceChildren(content);
    await refreshChainBadge();
  } catch (e) {
    if (e instanceof AuthError) {
      const hadToken = !!token();
      sessionStorage.removeItem(TOKEN_KEY);
      // Not signed in at all is not an error worth showing; a refused token or session is.
      return showLogin(hadToken || !/^log in/.test(e.message) ? e.message : '', e.login);
    }
    $('view').replaceChildren(el('p', { class: 'error' }, String(e.message || e)));
  }
}

// ---------------------------------------------------------------------------------------------
// Sessions list

const FILTERS = [
  ['identity', 'Identity', 'text'],
  ['connection', 'Connection', 'text'],
  ['protocol', 'Protocol', ['', 'postgres', 'ssh', 'http']],
  ['decision', 'Decision', ['', 'deny', 'review', 'mask', 'error']],
  ['approval', 'Approval request', 'text'],
  ['since', 'Since (UTC)', 'datetime-local'],
  ['until', 'Until (UTC)', 'datetime-local'],
];

async function sessionsView(params) {
  const query = new URLSearchParams();
  for (const [k] of FILTERS) {
    const v = params.get(k);
    if (v) query.set(k, k === 'since' || k === 'until' ? v + 'Z' : v);
  }
  const { sessions } = await api('sessions?' + query.toString());
  const form = el('form', { class: 'filters', id: 'filters' });
  for (const [k, label, type] of FILTERS) {
    let input;
    if (Array.isArray(type)) {
      input = el('select', { name: k, id: 'filter-' + k }, type.map((o) => el('option', { value: o }, o || 'any')));
    } else {
      input = el('input', { name: k, id: 'filter-' + k, type });
    }
    input.value = params.get(k) || '';
    form.append(el('label', {}, label, input));
  }
  form.append(el('button', { type: 'submit', id: 'apply-filters' }, 'Filter'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) p.set(k, String(v));
    location.hash = '#/sessions?' + p.toString();
  });
  const rows = sessions.map((s) =>
    el('tr', { class: 'clickable session-row', 'data-session': s.id, onclick: () => (location.hash = '#/session/' + encodeURIComponent(s.id)) },
      el('td', { class: 'mono' }, short(s.id)),
      el('td', {}, when(s.startedAt)),
      el('td', {}, s.identity),
      el('td', {}, s.connection),
      el('td', {}, s.protocol),
      el('td', {}, String(s.counts ? s.counts.operations : '')),
      el('td', {}, s.counts && s.counts.denied ? el('span', { class: 'decision deny' }, s.counts.denied + ' denied') : '',
        ' ', s.counts && s.counts.review ? el('span', { class: 'decision review' }, s.counts.review + ' held') : '',
        ' ', s.counts && s.counts.masked ? el('span', { class: 'decision mask' }, s.counts.masked + ' masked') : ''),
      el('td', {}, s.endReason || (s.endedAt ? 'ended' : 'open')),
    ),
  );
  return el('div', {},
    el('h2', {}, 'Sessions'),
    form,
    sessions.length === 0
      ? el('p', { class: 'muted', id: 'no-sessions' }, 'No sessions match.')
      : el('table', { id: 'sessions' },
          el('thead', {}, el('tr', {}, ['Session', 'Started', 'Identity', 'Connection', 'Protocol', 'Ops', 'Decisions', 'End'].map((h) => el('th', {}, h)))),
          el('tbody', {}, rows)),
  );
}

// ---------------------------------------------------------------------------------------------
// Session timeline

async function sessionView(id) {
  const t = await api('sessions/' + encodeURIComponent(id));
  const s = t.session;
  const head = el('div', { class: 'card' },
    el('div', { class: 'kv' },
      'Session', el('span', { class: 'mono', id: 'session-id' }, s.id),
      'Identity', el('span', {}, s.identity + (s.groups.length ? ' (' + s.groups.join(', ') + ')' : '')),
      'Connection', el('span', {}, s.connection + ' · ' + s.protocol),
      'Client', el('span', {}, s.clientAddress),
      'Started', el('span', {}, when(s.startedAt)),
      'Ended', el('span', {}, when(s.endedAt) + (s.endReason ? ' — ' + s.endReason : '')),
    ));
  const recordings = new Set(t.recordings);
  const rows = [];
  for (const op of t.operations) {
    const approval = op.approval
      ? el('div', { class: 'approval' },
          el('span', { class: 'mono request-id' }, op.approval.requestId), ' ',
          el('strong', {}, op.approval.outcome),
          op.approval.approvers.length ? ' by ' + op.approval.approvers.join(', ') : '',
          op.approval.reason ? ' — ' + op.approval.reason : '')
      : '';
    const playCell = el('td', {});
    const row = el('tr', { class: 'operation', 'data-seq': op.seq },
      el('td', {}, String(op.seq)),
      el('td', { title: op.at }, op.at ? op.at.slice(11, 19) : '—'),
      el('td', {}, decisionTag(op.decision)),
      el('td', {}, op.rule || ''),
      el('td', {}, el('pre', { class: 'op-text' }, op.text), op.reason ? el('div', { class: 'muted' }, op.reason) : '', op.error ? el('div', { class: 'error' }, op.error) : ''),
      el('td', { class: 'masked-fields' }, op.maskedColumns.map((m) => el('span', { class: 'masked' }, m))),
      el('td', {}, op.rows === null ? '' : String(op.rows)),
      el('td', {}, approval),
      playCell,
    );
    rows.push(row);
    if (recordings.has(op.seq)) {
      const holder = el('tr', { class: 'player-row', hidden: true }, el('td', { colspan: 9 }, el('div', { class: 'player', id: 'player-' + op.seq })));
      playCell.append(el('button', { type: 'button', class: 'play', 'data-seq': op.seq, onclick: () => play(s.id, op.seq, holder) }, '▶ Recording'));
      rows.push(holder);
    }
  }
  const audit = t.audit.length
    ? el('div', {}, el('h2', {}, 'Approval history'), auditTable(t.audit))
    : '';
  return el('div', {},
    el('p', {}, el('a', { href: '#/sessions' }, '← Sessions')),
    el('h2', {}, 'Session timeline'),
    head,
    el('table', { id: 'timeline' },
      el('thead', {}, el('tr', {}, ['#', 'At', 'Decision', 'Rule', 'Operation', 'Masked', 'Rows', 'Approval', ''].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows)),
    audit,
  );
}

function play(sessionId, seq, holder) {
  holder.hidden = false;
  const target = holder.querySelector('.player');
  if (target.dataset.loaded) return;
  target.dataset.loaded = '1';
  // The player fetches the cast itself, with the same Bearer token as every API call.
  window.AsciinemaPlayer.create(
    { url: '/api/sessions/' + encodeURIComponent(sessionId) + '/recordings/' + seq, fetchOpts: { headers: authHeaders(), credentials: 'same-origin' } },
    target,
    { autoPlay: true, fit: 'width', idleTimeLimit: 1, terminalFontSize: '13px' },
  );
}

function auditTable(events) {
  return el('table', { class: 'audit' },
    el('thead', {}, el('tr', {}, ['At', 'Event', 'Request', 'Actor', 'Detail'].map((h) => el('th', {}, h)))),
    el('tbody', {}, events.map((e) => el('tr', { class: 'audit-event' },
      el('td', {}, when(e.at)),
      el('td', {}, e.kind),
      el('td', { class: 'mono' }, e.subject),
      el('td', {}, e.actor || ''),
      el('td', {}, el('pre', {}, JSON.stringify(e.detail, null, 1))),
    ))));
}

// ---------------------------------------------------------------------------------------------
// Approvals

async function approvalsView() {
  const { requests } = await api('approvals');
  const pending = requests.filter((r) => r.status === 'pending');
  const past = requests.filter((r) => r.status !== 'pending');
  const card = (r) => el('div', { class: 'card approval-request', 'data-request': r.requestId },
    el('div', {}, el('strong', { class: 'mono' }, r.requestId), ' ', el('span', { class: 'decision ' + (r.status === 'approved' ? 'allow' : r.status === 'pending' ? 'review' : 'deny') }, r.status),
      el('span', { class: 'muted' }, '  ' + when(r.firstAt) + ' → ' + when(r.lastAt))),
    r.posted ? el('div', { class: 'posted' },
      r.posted.identity + ' on ' + r.posted.connection + ' (' + r.posted.protocol + ', rule ' + r.posted.rule + '): ', el('code', {}, r.posted.text),
      el('div', { class: 'muted' }, 'approvers: ' + r.posted.approverGroups.join(', ') + (r.posted.decidedBy.length ? ' · so far: ' + r.posted.decidedBy.join(', ') : '') + ' · deadline ' + when(r.posted.deadline))) : '',
    r.operations.map((o) => el('div', {},
      el('a', { href: '#/session/' + encodeURIComponent(o.sessionId) }, short(o.sessionId) + '#' + o.seq), ' ',
      o.identity + ' on ' + o.connection + (o.rule ? ' (rule ' + o.rule + ')' : '') + ': ',
      el('code', {}, o.text))),
    r.history.length ? auditTable(r.history) : el('p', { class: 'muted' }, 'No audit events recorded for this request.'),
  );
  return el('div', {},
    el('h2', {}, 'Pending approval requests (' + pending.length + ')'),
    el('div', { id: 'pending' }, pending.length ? pending.map(card) : el('p', { class: 'muted' }, 'None.')),
    el('h2', {}, 'Past approval requests (' + past.length + ')'),
    el('div', { id: 'past' }, past.length ? past.map(card) : el('p', { class: 'muted' }, 'None.')),
  );
}

// ---------------------------------------------------------------------------------------------
// Chain verification

async function verifyView() {
  const v = await api('verify');
  return el('div', {},
    el('h2', {}, 'Audit chain'),
    el('div', { class: 'card', id: 'verify' },
      el('p', {}, el('span', { class: 'badge ' + (v.ok ? 'ok' : 'bad'), id: 'verify-status' }, v.ok ? 'VERIFIED' : 'NOT VERIFIED')),
      el('div', { class: 'kv' },
        'Entries', String(v.entries),
        'Last entry', '#' + v.lastSeq + ' ' + (v.lastHash || ''),
        'Checkpoints', v.signedCheckpoints + ' signed of ' + v.checkpoints + (v.signaturesChecked ? '' : ' (signatures not checked: no audit.signingKey)'),
        'Not yet signed', v.unsignedTail + ' entries',
        'Checked at', when(v.checkedAt)),
      v.problems.length ? el('ul', { class: 'error' }, v.problems.map((p) => el('li', {}, p.kind + ' — ' + p.record + ': ' + p.message))) : '',
      v.notes.length ? el('ul', { class: 'muted' }, v.notes.map((n) => el('li', {}, n))) : '',
      el('p', { class: 'muted' }, 'Offline: ', el('code', {}, 'airlock audit verify -c airlock.yaml --public-key audit.pub'))),
  );
}

$('login-form').addEventListener('submit', login);
$('logout').addEventListener('click', logout);
window.addEventListener('hashchange', route);
route();
