// cairn's dashboard: reads the orchestrator's read-only API (/v1/...) and follows the event
// log (/v1/events, Server-Sent Events); every event refreshes what it may have changed, so
// the page follows the fleet without reloading. Plain DOM, no build step: the orchestrator
// serves this file as it is written.
'use strict';

const EXECUTION_STATES = ['running', 'accepted', 'pending', 'completed', 'failed', 'stopped', 'cancelled', 'lost'];
const TERMINAL = ['completed', 'failed', 'stopped', 'cancelled', 'lost'];
const FEED_LENGTH = 200;
// Events arrive in bursts (a deploy is a dozen); one refresh serves a burst, and while
// events keep coming the page reads the API at most once a second (each read includes
// every execution).
const REFRESH_AFTER_MS = 150;
const READ_EVERY_MS = 1000;

const page = {
  nodes: [], jobs: [], executions: [],
  job: null,           // the selected job's description
  versions: null,      // its versions, with diffs
  version: null,       // the version whose diff is shown
  execution: null,     // the selected execution's id
  logs: null,          // the AbortController of the log being followed
  seq: 0,              // the last event seen
};

// h('td', {class: 'x'}, 'text', child): an element, with text always set as text.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'style') el.style.cssText = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const pill = (state) => h('span', { class: 'pill', 'data-state': state }, state);

async function getJSON(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: ${response.status} ${(await response.text()).trim()}`);
  return response.json();
}

// Quantities as the API writes them ("250m", "2", "512Mi", "1G") in millicores or bytes.
function cpuMillis(q) {
  if (q === undefined || q === null) return 0;
  const s = String(q);
  return s.endsWith('m') ? Number(s.slice(0, -1)) : Number(s) * 1000;
}
const BYTE_UNITS = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
  k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };
function bytes(q) {
  if (q === undefined || q === null) return 0;
  const m = String(q).match(/^([0-9.]+)([A-Za-z]*)$/);
  if (!m) return 0;
  return Number(m[1]) * (BYTE_UNITS[m[2]] || 1);
}
function showBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n >= 10 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}
const showCpu = (m) => (m % 1000 === 0 ? `${m / 1000}` : `${m}m`);

function load(used, total, show) {
  if (!total) return h('span', { class: 'reason' }, '–');
  const share = Math.min(100, (100 * used) / total);
  return h('div', { class: 'load', title: `${show(used)} of ${show(total)} allocated` },
    h('div', { class: 'bar' }, h('i', { style: `width:${share.toFixed(1)}%` })),
    h('span', {}, `${show(used)} / ${show(total)}`));
}

function renderNodes() {
  const body = document.getElementById('nodes');
  const rows = page.nodes.map((n) => h('tr', { 'data-node': n.id, 'data-state': n.state },
    h('td', { class: 'mono' }, n.id),
    h('td', {}, pill(n.state), n.draining ? h('span', { class: 'counts' }, 'draining') : null,
      n.eligibility === 'ineligible' ? h('span', { class: 'counts' }, 'ineligible') : null),
    h('td', {}, Object.entries(n.labels || {}).map(([k, v]) => h('span', { class: 'label' }, `${k}=${v}`))),
    h('td', {}, load(cpuMillis(n.allocated?.cpu), cpuMillis(n.resources?.cpu), showCpu)),
    h('td', {}, load(bytes(n.allocated?.memory), bytes(n.resources?.memory), showBytes)),
    h('td', {}, n.capacity === null ? String(n.executions) : `${n.executions} / ${n.capacity}`)));
  body.replaceChildren(...(rows.length ? rows
    : [h('tr', { class: 'empty' }, h('td', { colspan: 6 }, 'no node has registered yet'))]));
  const connected = page.nodes.filter((n) => n.state === 'connected').length;
  document.getElementById('nodes-count').textContent = `${connected} of ${page.nodes.length} connected`;
}

// A job's executions of its current version, counted by state, and how many of its older
// versions still run (a rollout under way).
function countsOf(job) {
  const counts = {};
  let older = 0;
  for (const e of page.executions) {
    if (e.job_id !== job.id) continue;
    if (e.version === job.version) counts[e.state] = (counts[e.state] || 0) + 1;
    else if (!TERMINAL.includes(e.state)) older += 1;
  }
  return { counts, older };
}

function progress({ counts, older }) {
  const total = Object.values(counts).reduce((a, b) => a + b, 0) + older;
  const words = EXECUTION_STATES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`);
  if (older) words.push(`${older} of an older version`);
  const bar = h('div', { class: 'progress', title: words.join(', ') || 'no executions' });
  for (const state of EXECUTION_STATES) {
    if (!counts[state]) continue;
    bar.append(h('i', { 'data-state': state, 'data-count': counts[state],
      style: `width:${(100 * counts[state]) / total}%;background:var(--${state})` }));
  }
  if (older) {
    bar.append(h('i', { class: 'older', 'data-state': 'older', 'data-count': older,
      style: `width:${(100 * older) / total}%` }));
  }
  return [bar, h('span', { class: 'counts' }, words.join(' · ') || 'none')];
}

function renderJobs() {
  const body = document.getElementById('jobs');
  const rows = page.jobs.map((j) => h('tr', {
    'data-job': j.name, 'data-state': j.state,
    class: page.job && page.job.id === j.id ? 'selected' : null,
    onclick: () => { location.hash = `job=${encodeURIComponent(j.name)}`; },
  },
  h('td', {}, h('span', { class: 'mono' }, j.name), j.reason ? h('div', { class: 'reason' }, j.reason) : null),
  h('td', {}, j.type),
  h('td', {}, `v${j.version}`),
  h('td', {}, pill(j.state)),
  h('td', {}, h('div', { style: 'display:flex;align-items:center' }, progress(countsOf(j))))));
  body.replaceChildren(...(rows.length ? rows
    : [h('tr', { class: 'empty' }, h('td', { colspan: 5 }, 'no job has been deployed yet'))]));
  const active = page.jobs.filter((j) => ['running', 'deploying', 'queued'].includes(j.state)).length;
  document.getElementById('jobs-count').textContent = `${active} active of ${page.jobs.length}`;
  document.getElementById('legend').replaceChildren(...EXECUTION_STATES.flatMap((s) =>
    [h('i', { style: `background:var(--${s})` }), s]));
  const running = page.executions.filter((e) => e.state === 'running').length;
  document.getElementById('summary').textContent =
    `${page.nodes.length} nodes · ${page.jobs.length} jobs · ${running} executions running`;
}

function renderDiff(lines) {
  return h('pre', { class: 'diff' }, (lines || []).map((line) => {
    const kind = line.startsWith('+ ') ? 'add' : line.startsWith('- ') ? 'del' : 'same';
    return h('span', { class: kind }, line);
  }));
}

function renderDetail() {
  const section = document.getElementById('detail');
  const job = page.job;
  if (!job) { section.hidden = true; return; }
  section.hidden = false;
  const facts = h('dl', { class: 'facts' },
    h('dt', {}, 'id'), h('dd', { class: 'mono' }, job.id),
    h('dt', {}, 'state'), h('dd', {}, pill(job.state), job.reason ? ` ${job.reason}` : ''),
    h('dt', {}, 'version'), h('dd', {}, `v${job.version}`),
    job.rollout ? [h('dt', {}, 'rollout'), h('dd', {},
      `v${job.rollout.version} ${job.rollout.state}: ${job.rollout.healthy} healthy, `
      + `${job.rollout.pending} not yet, ${job.rollout.older} older left`
      + (job.rollout.reason ? ` (${job.rollout.reason})` : ''))] : null);
  const versions = page.versions || [];
  const shown = versions.find((v) => v.version === page.version) || versions[versions.length - 1];
  const list = h('ol', {}, versions.slice().reverse().map((v) => h('li', {
    'data-version': v.version,
    class: shown && v.version === shown.version ? 'selected' : null,
    onclick: () => { page.version = v.version; renderDetail(); },
  }, h('strong', {}, `v${v.version}`), ' ', h('span', { class: 'reason' }, v.time.replace('T', ' ').slice(0, 19)),
  v.reverted_to ? h('div', { class: 'reason' }, `revert to v${v.reverted_to}`) : null)));
  const executions = h('table', {},
    h('thead', {}, h('tr', {}, ['execution', 'node', 'version', 'attempt', 'state', 'exit', 'reason']
      .map((c) => h('th', {}, c)))),
    h('tbody', {}, job.executions.slice().reverse().map((e) => h('tr', {
      'data-execution': e.id, 'data-state': e.state,
      class: page.execution === e.id ? 'selected' : null,
      onclick: () => { location.hash = `job=${encodeURIComponent(job.name)}&execution=${e.id}`; },
    },
    h('td', { class: 'mono' }, e.id), h('td', { class: 'mono' }, e.node_id), h('td', {}, `v${e.version}`),
    h('td', {}, e.attempt), h('td', {}, pill(e.state)), h('td', {}, e.exit_code ?? ''),
    h('td', { class: 'reason' }, e.reason || '')))));
  section.replaceChildren(
    h('button', { class: 'close', title: 'close', onclick: () => { location.hash = ''; } }, '✕'),
    h('h2', {}, 'Job ', h('span', { class: 'mono' }, job.name), h('small', {}, job.type)),
    facts,
    h('h3', {}, 'Versions', h('small', {}, shown ? `v${shown.version} against the one before` : '')),
    h('div', { class: 'versions' }, list, shown ? renderDiff(shown.diff) : h('p', {}, 'reading…')),
    h('h3', {}, 'Executions', h('small', {}, `${job.executions.length} of every version`)),
    executions);
}

// Follows the selected execution's output until its attempt ends, appending as it comes.
function followLogs(id) {
  if (page.logs) page.logs.abort();
  page.logs = null;
  const section = document.getElementById('execution');
  if (!id) { section.hidden = true; return; }
  const out = h('pre', { class: 'logs', id: 'logs' });
  const status = h('small', { id: 'logs-status' }, 'following');
  section.replaceChildren(h('h2', {}, 'Output of ', h('span', { class: 'mono' }, id), status), out);
  section.hidden = false;
  const controller = new AbortController();
  page.logs = controller;
  (async () => {
    try {
      const response = await fetch(`/v1/executions/${encodeURIComponent(id)}/logs?follow=1`,
        { signal: controller.signal });
      if (!response.ok) throw new Error((await response.text()).trim());
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
        out.append(decoder.decode(value, { stream: true }));
        if (atEnd) out.scrollTop = out.scrollHeight;
      }
      status.textContent = 'the attempt ended';
    } catch (e) {
      if (!controller.signal.aborted) status.textContent = `stopped: ${e.message}`;
    }
  })();
}

// What the hash selects: #job=NAME[&execution=ID].
function selection() {
  const params = new URLSearchParams(location.hash.slice(1));
  return { job: params.get('job'), execution: params.get('execution') };
}

const pending = { timer: null, versions: false, last: 0 };

// Reads everything an event may have changed, once per burst; `soon` (what the user just
// chose) does not wait out the second since the last read.
function refresh({ versions = false, soon = false } = {}) {
  pending.versions = pending.versions || versions;
  if (pending.timer) return;
  const wait = soon ? REFRESH_AFTER_MS
    : Math.max(REFRESH_AFTER_MS, READ_EVERY_MS - (Date.now() - pending.last));
  pending.timer = setTimeout(async () => {
    const withVersions = pending.versions;
    pending.timer = null;
    pending.versions = false;
    pending.last = Date.now();
    try {
      const { job } = selection();
      const [nodes, jobs, executions, described, history] = await Promise.all([
        getJSON('/v1/nodes'), getJSON('/v1/jobs'), getJSON('/v1/executions'),
        job ? getJSON(`/v1/jobs/${encodeURIComponent(job)}`).catch(() => null) : null,
        job && (withVersions || !page.versions)
          ? getJSON(`/v1/jobs/${encodeURIComponent(job)}/versions`).catch(() => null) : page.versions,
      ]);
      Object.assign(page, { nodes, jobs, executions, job: described, versions: job ? history : null });
      renderNodes();
      renderJobs();
      renderDetail();
    } catch (e) {
      document.getElementById('summary').textContent = `cannot read the API: ${e.message}`;
    }
  }, wait);
}

// One line of the feed: what the event is about, in a few words.
function about(event) {
  const d = event.data || {};
  const parts = [];
  if (d.job_name || d.name || d.spec?.name) parts.push(d.job_name || d.name || d.spec.name);
  if (d.node || d.node_id) parts.push(`on ${d.node || d.node_id}`);
  if (d.version) parts.push(`v${d.version}`);
  if (d.state) parts.push(`→ ${d.state}`);
  if (d.reason) parts.push(`(${d.reason})`);
  return parts.join(' ') || event.subject || '';
}

function addToFeed(event) {
  const feed = document.getElementById('feed');
  const line = h('li', { class: 'fresh', 'data-seq': event.seq, 'data-type': event.type || 'undecodable' },
    h('span', { class: 'seq mono' }, `#${event.seq}`),
    h('span', { class: 'time mono' }, (event.time || '').slice(11, 19)),
    h('span', { class: 'type' }, event.type || 'undecodable'),
    h('span', { class: 'what', title: JSON.stringify(event.data ?? event.error) }, about(event)));
  feed.prepend(line);
  while (feed.children.length > FEED_LENGTH) feed.lastElementChild.remove();
  document.getElementById('events-seq').textContent = `up to #${event.seq}`;
}

// Follows the log from its last events; the browser resumes after the last event it saw
// when the connection comes back (Last-Event-ID).
function follow() {
  const live = document.getElementById('live');
  const source = new EventSource('/v1/events?tail=50');
  source.onopen = () => { live.dataset.live = 'live'; live.textContent = 'live'; refresh({ soon: true }); };
  source.onerror = () => { live.dataset.live = 'reconnecting'; live.textContent = 'reconnecting'; };
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    page.seq = event.seq;
    addToFeed(event);
    const name = event.data?.job_name || event.data?.spec?.name;
    refresh({ versions: event.type === 'JobDeployed' && name === selection().job });
  };
}

function onSelection() {
  const { job, execution } = selection();
  if (!job) { page.job = null; page.versions = null; page.version = null; }
  else if (page.job?.name !== job) { page.versions = null; page.version = null; }
  if (execution !== page.execution) { page.execution = execution; followLogs(execution); }
  renderDetail();
  refresh({ versions: true, soon: true });
}

window.addEventListener('hashchange', onSelection);
onSelection();
follow();
