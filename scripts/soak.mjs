#!/usr/bin/env node
// scripts/soak.mjs — soak test for a running mlaserve: many mixed requests,
// some clients hanging up mid-stream, then checks that nothing leaked.
// Node 20+, standard library only. Not part of `make test` (minutes, and the
// numbers depend on the machine); scripts/soak.sh starts a server and runs it.
//
// Load: --requests requests, --concurrency at a time (closed loop: each worker
// sends its next request when the previous one ended). Each request is drawn
// from a seeded generator: chat or completions (half each), streaming or not
// (half each), prompts of 4..400 words (a quarter of them behind a shared
// ~300-word prefix, so the prefix cache is used and evicted), max_tokens
// 4..96, ignore_eos on half of them (then completion_tokens must equal
// max_tokens), n = 2 on some non-streaming ones, temperature 0 or 0.8.
// --abort-frac of the requests (default 0.1) are streams whose client hangs up
// after 0..4 data events (0: right after the response headers).
//
// Checks and report:
//   errors      every request that is not an intentional abort must answer 200
//               with a well-formed body (JSON with choices, finish_reason stop or
//               length, usage; or an SSE stream of `data: <json>` events with
//               one finish_reason per choice, the usage chunk and `data: [DONE]`).
//               Must be 0.
//   KV pages    /metrics before and after (after: polled up to --settle seconds
//               until running = waiting = 0). mlaserve:kv_pages_free counts free
//               pages plus prefix-cached pages no sequence holds (evictable:
//               engine/kv.h kv_available = n_free + n_evictable), so with
//               nothing running free must equal total: leaked = total - free
//               must be 0. Cached pages still hold prefix data, which is not
//               a leak (mlaserve:kv_cache_usage_perc is 0 then too).
//   counters    the server's mlaserve:request_success_total deltas against what
//               the clients saw (aborts counted as finished_reason="abort").
//   RSS         with --pid, from /proc/PID/status: VmRSS before (after
//               --warmup requests, not counted), peak (sampled every 100 ms),
//               after the settle, and VmHWM (peak since start); split into
//               RssAnon (heap, malloc arenas, thread stacks, the KV pool: what
//               a leak grows) and RssFile (the mmap'd weights, paged in as
//               experts are first used: bounded by the checkpoint's size), with
//               RssAnon after each tenth of the requests (a leak keeps growing,
//               warm-up effects level off). Warm-up effects: on the CPU
//               backend the KV pool is malloc'd and its pages become resident
//               on first use (up to pages x 64 tokens x layers x
//               (kv_lora_rank + rope dim) x 4 bytes), and glibc keeps freed
//               memory in its per-thread arenas (one HTTP thread per
//               connection). --max-rss-growth-mib bounds the RssAnon growth.
//   throughput  duration, requests/s, output tokens/s (from usage).
// Exit status 1 when errors or leaked pages are not 0 (or RssAnon grew more
// than --max-rss-growth-mib, when given), else 0.
//
// Usage:
//   node scripts/soak.mjs --url http://127.0.0.1:8000 [--pid PID] [--requests 1000] [--concurrency 32]
//        [--abort-frac 0.1] [--warmup 32] [--settle 10] [--model NAME (default: the first of /v1/models)]
//        [--api-key KEY] [--seed 1]
//        [--timeout 600] [--max-rss-growth-mib M] [--json FILE]
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { WORDS, rng } from './lib/bench-util.mjs';

function usage(msg) {
  if (msg) console.error('soak: ' + msg);
  console.error('usage: node scripts/soak.mjs --url http://HOST:PORT [--pid PID] [--requests N] [--concurrency N] ' +
                '[--abort-frac F] [--warmup N] [--settle S] [--model NAME] [--api-key KEY] [--seed N] [--timeout S] ' +
                '[--max-rss-growth-mib M] [--json FILE]');
  process.exit(2);
}
const opt = { url: null, pid: 0, requests: 1000, concurrency: 32, abortFrac: 0.1, warmup: 32, settle: 10, model: null,
              apiKey: process.env.OPENAI_API_KEY || null, seed: 1, timeout: 600, maxRssGrowthMiB: null, json: null };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const k = argv[i], v = argv[i + 1];
  if (k === '-h' || k === '--help') usage();
  if (v === undefined) usage(k + ' needs a value');
  i++;
  const num = (min) => { const x = Number(v); if (!Number.isFinite(x) || x < min) usage(`${k}: want a number >= ${min}`); return x; };
  switch (k) {
    case '--url': opt.url = v.replace(/\/+$/, '').replace(/\/v1$/, ''); break;
    case '--pid': opt.pid = Math.trunc(num(1)); break;
    case '--requests': opt.requests = Math.trunc(num(1)); break;
    case '--concurrency': opt.concurrency = Math.trunc(num(1)); break;
    case '--abort-frac': opt.abortFrac = num(0); break;
    case '--warmup': opt.warmup = Math.trunc(num(0)); break;
    case '--settle': opt.settle = num(0); break;
    case '--model': opt.model = v; break;
    case '--api-key': opt.apiKey = v; break;
    case '--seed': opt.seed = Math.trunc(num(0)); break;
    case '--timeout': opt.timeout = num(1); break;
    case '--max-rss-growth-mib': opt.maxRssGrowthMiB = num(0); break;
    case '--json': opt.json = v; break;
    default: usage('unknown option ' + k);
  }
}
if (!opt.url) usage('--url is required');
const headers = { 'content-type': 'application/json' };
if (opt.apiKey) headers.authorization = 'Bearer ' + opt.apiKey;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- server state
async function metrics() {
  const t = await (await fetch(opt.url + '/metrics', { headers, signal: AbortSignal.timeout(10000) })).text();
  const g = (name) => {
    const esc = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const m = t.match(new RegExp('^' + esc + ' (\\S+)', 'm'));
    return m ? Number(m[1]) : NaN;
  };
  const reasons = {};
  for (const m of t.matchAll(/^mlaserve:request_success_total\{finished_reason="([a-z_]+)"\} (\S+)/gm)) reasons[m[1]] = +m[2];
  const codes = {};
  for (const m of t.matchAll(/^mlaserve:http_requests_total\{code="(\d+)"\} (\S+)/gm)) codes[m[1]] = +m[2];
  return { total: g('mlaserve:kv_pages_total'), free: g('mlaserve:kv_pages_free'),
           running: g('mlaserve:num_requests_running'), waiting: g('mlaserve:num_requests_waiting'),
           inflight: g('mlaserve:num_requests_inflight'), usage: g('mlaserve:kv_cache_usage_perc'),
           prefixHits: g('mlaserve:prefix_cache_hits_total'), preemptions: g('mlaserve:num_preemptions_total'),
           reasons, codes };
}

function procStatus(field) { // kB, or NaN
  if (!opt.pid) return NaN;
  try {
    const m = fs.readFileSync(`/proc/${opt.pid}/status`, 'utf8').match(new RegExp('^' + field + ':\\s+(\\d+) kB', 'm'));
    return m ? +m[1] : NaN;
  } catch { return NaN; }
}
const mib = (kb) => (Number.isFinite(kb) ? (kb / 1024).toFixed(1) : 'n/a');

// ---------------------------------------------------------------- requests
const words = (r, n) => Array.from({ length: n }, () => WORDS[Math.floor(r() * WORDS.length)]).join(' ');
const SHARED = words(rng(4242), 300);

function makeRequest(i, tag) {
  const r = rng(opt.seed * 1000003 + i * 7919 + 17);
  const chat = r() < 0.5;
  const abort = r() < opt.abortFrac;
  const stream = abort || r() < 0.5;
  const shared = r() < 0.25;
  const ignoreEos = abort || r() < 0.5;
  const maxTokens = abort ? 48 + Math.floor(r() * 48) : 4 + Math.floor(r() * 93);
  const n = !stream && r() < 0.1 ? 2 : 1;
  const text = (shared ? SHARED + ' ' : '') + `Soak ${tag} request ${i}: ` + words(r, 4 + Math.floor(r() * 397));
  const body = { max_tokens: maxTokens, temperature: r() < 0.5 ? 0 : 0.8, seed: i, n };
  body.model = opt.model;
  if (chat) body.messages = [{ role: 'user', content: text }];
  else body.prompt = text;
  if (ignoreEos) body.ignore_eos = true;
  if (stream) { body.stream = true; body.stream_options = { include_usage: true }; }
  return { i, chat, stream, abort, abortAfter: abort ? Math.floor(r() * 5) : -1, ignoreEos, maxTokens, n,
           path: chat ? '/v1/chat/completions' : '/v1/completions', body: JSON.stringify(body) };
}

function checkUsage(q, usage, finishes) {
  if (!usage || !Number.isInteger(usage.completion_tokens) || !Number.isInteger(usage.prompt_tokens))
    throw new Error('usage ' + JSON.stringify(usage));
  if (finishes.length !== q.n) throw new Error(`${finishes.length} finish reasons for n=${q.n}: ${JSON.stringify(finishes)}`);
  for (const f of finishes) if (f !== 'stop' && f !== 'length') throw new Error('finish_reason ' + JSON.stringify(f));
  if (q.ignoreEos && (usage.completion_tokens !== q.maxTokens * q.n || finishes.some((f) => f !== 'length')))
    throw new Error(`ignore_eos: completion_tokens ${usage.completion_tokens}, finishes ${finishes}, want ${q.maxTokens * q.n}, length`);
  if (usage.completion_tokens > q.maxTokens * q.n) throw new Error('completion_tokens over max_tokens');
  return usage.completion_tokens;
}

function checkJson(q, text) {
  let j;
  try { j = JSON.parse(text); } catch { throw new Error('body is not JSON: ' + text.slice(0, 120)); }
  if (!Array.isArray(j.choices) || j.choices.length !== q.n) throw new Error('choices: ' + text.slice(0, 120));
  for (const c of j.choices) {
    const content = q.chat ? c.message && c.message.content : c.text;
    if (typeof content !== 'string') throw new Error('no text in choice ' + JSON.stringify(c).slice(0, 120));
  }
  return checkUsage(q, j.usage, j.choices.map((c) => c.finish_reason));
}

function checkSse(q, raw) {
  if (!raw.endsWith('data: [DONE]\n\n')) throw new Error(`stream does not end with [DONE] (${raw.length} bytes, tail ${JSON.stringify(raw.slice(-60))})`);
  const lines = raw.split('\n');
  lines.pop();
  const finishes = [];
  let usage = null;
  for (let k = 0; k < lines.length; k += 2) {
    if (!lines[k].startsWith('data: ')) throw new Error('not a data line: ' + lines[k].slice(0, 80));
    if (lines[k + 1] !== '') throw new Error('no blank line after an event');
    const e = lines[k].slice(6);
    if (e === '[DONE]') { if (k + 2 !== lines.length) throw new Error('[DONE] before the end'); break; }
    let c;
    try { c = JSON.parse(e); } catch { throw new Error('event is not JSON: ' + e.slice(0, 80)); }
    if (c.error) throw new Error('error event: ' + e.slice(0, 160));
    if (c.usage) usage = c.usage;
    for (const ch of c.choices || []) if (ch.finish_reason) finishes.push(ch.finish_reason);
  }
  return checkUsage(q, usage, finishes);
}

// outcome: 'ok' | 'aborted' | 'error'
async function one(q) {
  const ctl = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; ctl.abort(); }, opt.timeout * 1000);
  const res = { i: q.i, outcome: 'error', error: null, tokens: 0 };
  try {
    const resp = await fetch(opt.url + q.path, { method: 'POST', headers, body: q.body, signal: ctl.signal });
    if (resp.status !== 200) {
      res.error = `status ${resp.status}: ${(await resp.text()).trim().slice(0, 160)}`;
      return res;
    }
    if (q.abort) {
      const reader = resp.body.getReader(), dec = new TextDecoder();
      let buf = '', events = 0;
      while (events < q.abortAfter) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        events = (buf.match(/^data: /gm) || []).length;
      }
      if (buf.includes('data: [DONE]')) { // finished before the hang-up point: an ordinary stream then
        res.tokens = checkSse(q, buf);
        res.outcome = 'ok';
        return res;
      }
      ctl.abort();
      res.outcome = 'aborted';
      return res;
    }
    const text = await resp.text();
    res.tokens = q.stream ? checkSse(q, text) : checkJson(q, text);
    res.outcome = 'ok';
  } catch (e) {
    res.error = timedOut ? `no complete answer within ${opt.timeout} s` : String(e.cause ? `${e.message}: ${e.cause.code || e.cause}` : e.message);
  } finally {
    clearTimeout(timer);
  }
  return res;
}

async function runLoad(count, concurrency, tag, onResult) {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const q = makeRequest(next++, tag);
      onResult(q, await one(q));
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

// ---------------------------------------------------------------- run
if (!opt.model) { // the first served model
  try {
    const j = await (await fetch(opt.url + '/v1/models', { headers, signal: AbortSignal.timeout(10000) })).json();
    opt.model = j.data[0].id;
  } catch (e) { usage(`cannot read ${opt.url}/v1/models: ${e.message}`); }
}
const nonce = Math.random().toString(16).slice(2, 10); // no prefix-cache reuse across soak runs (besides SHARED)
const m0 = await metrics().catch((e) => usage(`cannot read ${opt.url}/metrics: ${e.message}`));
if (!Number.isFinite(m0.total)) usage('no mlaserve:kv_pages_total in /metrics (not an mlaserve server?)');
if (opt.warmup) {
  let bad = 0;
  await runLoad(opt.warmup, opt.concurrency, 'warmup-' + nonce, (q, r) => { if (r.outcome === 'error') bad++; });
  if (bad) console.log(`soak: warning: ${bad} of ${opt.warmup} warm-up requests failed`);
}
const before = await metrics();
const rss0 = procStatus('VmRSS'), anon0 = procStatus('RssAnon'), file0 = procStatus('RssFile');
let rssPeak = rss0;
const sampler = setInterval(() => { const r = procStatus('VmRSS'); if (r > rssPeak) rssPeak = r; }, 100);
const rssSteps = [anon0]; // RssAnon after each tenth of the requests
const counts = { ok: 0, aborted: 0, error: 0 };
const errors = [];
let tokens = 0;
const t0 = performance.now();
await runLoad(opt.requests, opt.concurrency, nonce, (q, r) => {
  counts[r.outcome]++;
  tokens += r.tokens;
  const done = counts.ok + counts.aborted + counts.error;
  if (opt.pid && done % Math.max(1, Math.round(opt.requests / 10)) === 0 && rssSteps.length < 11) rssSteps.push(procStatus('RssAnon'));
  if (r.outcome === 'error') errors.push(`request ${q.i} (${q.chat ? 'chat' : 'completions'}${q.stream ? ', stream' : ''}` +
                                         `${q.abort ? ', abort after ' + q.abortAfter : ''}, n=${q.n}): ${r.error}`);
});
const wall = (performance.now() - t0) / 1000;

// settle: the engine notices hung-up clients at its next poll and frees their pages
const ts = performance.now();
let after = await metrics();
while (!(after.running === 0 && after.waiting === 0 && after.inflight === 0 && after.free === after.total) &&
       performance.now() - ts < opt.settle * 1000) {
  await sleep(100);
  after = await metrics();
}
const settleS = (performance.now() - ts) / 1000;
clearInterval(sampler);
const rss1 = procStatus('VmRSS'), hwm = procStatus('VmHWM'), anon1 = procStatus('RssAnon'), file1 = procStatus('RssFile');
if (rss1 > rssPeak) rssPeak = rss1;

const leaked = after.total - after.free;
const d = (k) => (after.reasons[k] || 0) - (before.reasons[k] || 0);
const serverOk = d('stop') + d('length'), serverAbort = d('abort');
const rssGrowth = (rss1 - rss0) / 1024, anonGrowth = (anon1 - anon0) / 1024;
const out = {
  date: new Date().toISOString(), url: opt.url, requests: opt.requests, concurrency: opt.concurrency,
  abort_frac: opt.abortFrac, warmup: opt.warmup, ok: counts.ok, aborted: counts.aborted, errors: counts.error,
  duration_s: +wall.toFixed(2), req_per_s: +(opt.requests / wall).toFixed(2), out_tok_per_s: +(tokens / wall).toFixed(1),
  kv_pages_total: after.total, kv_pages_free_before: before.free, kv_pages_free_after: after.free, kv_pages_leaked: leaked,
  running_after: after.running, waiting_after: after.waiting, inflight_after: after.inflight, settle_s: +settleS.toFixed(2),
  server_finished_ok: serverOk, server_aborted: serverAbort, prefix_cache_hit_tokens: after.prefixHits - before.prefixHits,
  preemptions: after.preemptions - before.preemptions,
  rss_mib_before: +mib(rss0) || null, rss_mib_after: +mib(rss1) || null, rss_mib_peak: +mib(rssPeak) || null,
  rss_mib_growth: Number.isFinite(rssGrowth) ? +rssGrowth.toFixed(1) : null, vm_hwm_mib: +mib(hwm) || null,
  rss_anon_mib_before: +mib(anon0) || null, rss_anon_mib_after: +mib(anon1) || null,
  rss_anon_mib_growth: Number.isFinite(anonGrowth) ? +anonGrowth.toFixed(1) : null,
  rss_file_mib_before: +mib(file0) || null, rss_file_mib_after: +mib(file1) || null,
  rss_anon_mib_by_tenth: rssSteps.map((k) => +mib(k) || null),
};
for (const e of errors.slice(0, 20)) console.log('soak: ERROR ' + e);
if (errors.length > 20) console.log(`soak: ... ${errors.length - 20} more errors`);
console.log(`soak: ${opt.requests} requests at concurrency ${opt.concurrency} in ${wall.toFixed(1)} s ` +
            `(${out.req_per_s} req/s, ${out.out_tok_per_s} output tok/s): ${counts.ok} ok, ${counts.aborted} aborted on purpose, ` +
            `${counts.error} errors`);
console.log(`soak: server counted ${serverOk} finished (stop/length) and ${serverAbort} aborted; ` +
            `prefix cache hits ${out.prefix_cache_hit_tokens} tokens; preemptions ${out.preemptions}`);
console.log(`soak: KV pages ${after.free} free of ${after.total} after ${settleS.toFixed(1)} s ` +
            `(before: ${before.free}); leaked ${leaked}; running ${after.running}, waiting ${after.waiting}, inflight ${after.inflight}`);
if (opt.pid)
  console.log(`soak: server RSS ${mib(rss0)} MiB before, ${mib(rssPeak)} MiB peak, ${mib(rss1)} MiB after ` +
              `(growth ${out.rss_mib_growth} MiB); VmHWM ${mib(hwm)} MiB`);
if (opt.pid)
  console.log(`soak: of which anonymous (heap, KV pool, stacks) ${mib(anon0)} -> ${mib(anon1)} MiB ` +
              `(growth ${out.rss_anon_mib_growth} MiB; after each tenth: ${rssSteps.map(mib).join(' ')}), ` +
              `file-backed (mmap'd weights paged in) ${mib(file0)} -> ${mib(file1)} MiB`);
if (opt.json) fs.appendFileSync(opt.json, JSON.stringify(out) + '\n');
let fail = counts.error > 0 || leaked !== 0 || after.running !== 0 || after.waiting !== 0;
if (counts.ok !== serverOk || counts.aborted !== serverAbort)
  console.log(`soak: note: client saw ${counts.ok} ok / ${counts.aborted} aborted, server counted ${serverOk} / ${serverAbort}`);
if (opt.maxRssGrowthMiB !== null && anonGrowth > opt.maxRssGrowthMiB) {
  console.log(`soak: anonymous RSS grew ${anonGrowth.toFixed(1)} MiB, over --max-rss-growth-mib ${opt.maxRssGrowthMiB}`);
  fail = true;
}
console.log(fail ? 'soak: FAILED' : 'soak: passed (0 errors, 0 leaked pages)');
process.exit(fail ? 1 : 0);
