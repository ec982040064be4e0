#!/usr/bin/env node
// scripts/bench-serving.mjs — a load generator for any OpenAI-compatible server
// (mlaserve, vLLM, SGLang, llama.cpp server, ...). Node 20+, standard library only.
//
// Sends --requests requests, at most --concurrency in flight at once (a closed
// loop: each of the --concurrency workers sends its next request as soon as
// the previous one finished), and prints one markdown table row per run:
// request throughput, aggregate output tokens/s, time to first token (TTFT),
// inter-token latency (ITL: gaps between successive streamed content chunks),
// end-to-end latency (p50/p99 each) and errors. Token counts come from `usage`
// (the last chunk, via stream_options.include_usage), not from counting chunks.
//
// Prompts are random words sized to about --prompt-tokens, each starting with a
// tag unique to this invocation and request ("Request <nonce>-<i>:"), so no two
// prompts share a KV page and a prefix cache cannot help, also across runs
// against the same server (the `cached tok` column shows what the server
// reported as cached; it should be 0). Sizing: one calibration request with
// max_tokens 1 measures the server's prompt_tokens for a known word count
// (chat prompts include the chat template's tokens). That request also warms
// the server up; it is not counted.
//
// Usage:
//   node scripts/bench-serving.mjs --base-url http://127.0.0.1:8000/v1 --model tiny-v3 \
//       --concurrency 1,8,32 --requests 32 --prompt-tokens 128 --max-tokens 64
// Options:
//   --base-url URL        the API root, ending in /v1 (default http://127.0.0.1:8000/v1)
//   --model NAME          model id to send (default: the first of GET /models)
//   --concurrency N[,N]   requests in flight at most; a list runs once per value (default 1)
//   --requests N          requests per run (default 4 x concurrency, at least 8)
//   --prompt-tokens N     approximate prompt length in tokens (default 128)
//   --max-tokens N        output tokens per request (default 64)
//   --endpoint chat|completions   (default chat)
//   --stream / --no-stream        SSE streaming (default on; TTFT and ITL need it)
//   --ignore-eos / --no-ignore-eos  send ignore_eos: true so every request makes max-tokens tokens (default on)
//   --temperature T       (default 0)
//   --api-key KEY         sent as Authorization: Bearer (default $OPENAI_API_KEY, if set)
//   --seed N              seed for the prompt words (default 1; the per-invocation nonce still differs)
//   --timeout S           per-request limit in seconds (default 900)
//   --label TEXT          first column of the row (default: the model name)
//   --json FILE           also append one JSON object per run to FILE
//   --no-header           print rows only
import os from 'node:os';
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { WORDS, rng, sseEvents } from './lib/bench-util.mjs';

function usage(msg) {
  if (msg) console.error('bench-serving: ' + msg);
  console.error('usage: node scripts/bench-serving.mjs --base-url URL [--model NAME] [--concurrency N[,N...]] ' +
    '[--requests N] [--prompt-tokens N] [--max-tokens N] [--endpoint chat|completions] [--no-stream] ' +
    '[--no-ignore-eos] [--temperature T] [--api-key KEY] [--seed N] [--timeout S] [--label TEXT] [--json FILE] [--no-header]');
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    baseUrl: 'http://127.0.0.1:8000/v1', model: null, concurrency: [1], requests: null, promptTokens: 128,
    maxTokens: 64, endpoint: 'chat', stream: true, ignoreEos: true, temperature: 0,
    apiKey: process.env.OPENAI_API_KEY || null, seed: 1, timeout: 900, label: null, json: null, header: true,
  };
  const num = (v, name, min = 0) => {
    const x = Number(v);
    if (v === undefined || !Number.isFinite(x) || x < min) usage(`${name}: want a number >= ${min}, got ${v}`);
    return x;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    let [k, v] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const val = () => (v !== undefined ? v : argv[++i]);
    switch (k) {
      case '--base-url': o.baseUrl = val().replace(/\/+$/, ''); break;
      case '--model': o.model = val(); break;
      case '--concurrency': o.concurrency = String(val()).split(',').map((x) => Math.trunc(num(x, k, 1))); break;
      case '--requests': o.requests = Math.trunc(num(val(), k, 1)); break;
      case '--prompt-tokens': o.promptTokens = Math.trunc(num(val(), k, 1)); break;
      case '--max-tokens': o.maxTokens = Math.trunc(num(val(), k, 1)); break;
      case '--endpoint': o.endpoint = val(); if (!['chat', 'completions'].includes(o.endpoint)) usage(`${k}: chat or completions`); break;
      case '--stream': o.stream = true; break;
      case '--no-stream': o.stream = false; break;
      case '--ignore-eos': o.ignoreEos = true; break;
      case '--no-ignore-eos': o.ignoreEos = false; break;
      case '--temperature': o.temperature = num(val(), k); break;
      case '--api-key': o.apiKey = val(); break;
      case '--seed': o.seed = Math.trunc(num(val(), k)); break;
      case '--timeout': o.timeout = num(val(), k, 1); break;
      case '--label': o.label = val(); break;
      case '--json': o.json = val(); break;
      case '--no-header': o.header = false; break;
      case '-h': case '--help': usage(); break;
      default: usage('unknown option ' + a);
    }
  }
  return o;
}

const opt = parseArgs(process.argv.slice(2));
const headers = { 'content-type': 'application/json' };
if (opt.apiKey) headers.authorization = 'Bearer ' + opt.apiKey;

// ---------------------------------------------------------------- prompts

const NONCE = randomBytes(4).toString('hex');
function promptText(index, nWords) {
  const r = rng(opt.seed * 1000003 + index * 7919 + 17);
  const w = [`Request ${NONCE}-${index}:`];
  for (let i = 0; i < nWords; i++) w.push(WORDS[Math.floor(r() * WORDS.length)]);
  return w.join(' ');
}

function body(text, maxTokens, stream) {
  const b = { model: opt.model, max_tokens: maxTokens, temperature: opt.temperature };
  if (opt.endpoint === 'chat') b.messages = [{ role: 'user', content: text }];
  else b.prompt = text;
  if (opt.ignoreEos) b.ignore_eos = true;
  if (stream) {
    b.stream = true;
    b.stream_options = { include_usage: true };
  }
  return JSON.stringify(b);
}

const endpointUrl = () => opt.baseUrl + (opt.endpoint === 'chat' ? '/chat/completions' : '/completions');

// ---------------------------------------------------------------- one request
// Returns { ok, error, ttft, itl: [gaps s], e2e, promptTokens, outputTokens, cached }
async function oneRequest(text) {
  const t0 = performance.now();
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), opt.timeout * 1000);
  const out = { ok: false, error: null, ttft: null, itl: [], e2e: null, promptTokens: 0, outputTokens: 0, cached: 0 };
  const takeUsage = (u) => {
    if (!u) return;
    out.promptTokens = u.prompt_tokens || 0;
    out.outputTokens = u.completion_tokens || 0;
    out.cached = (u.prompt_tokens_details && u.prompt_tokens_details.cached_tokens) || 0;
  };
  try {
    const res = await fetch(endpointUrl(), { method: 'POST', headers, body: body(text, opt.maxTokens, opt.stream), signal: ctl.signal });
    if (res.status !== 200) {
      const t = await res.text().catch(() => '');
      throw new Error(`HTTP ${res.status}: ${t.slice(0, 200)}`);
    }
    if (!opt.stream) {
      const j = await res.json();
      takeUsage(j.usage);
      out.e2e = (performance.now() - t0) / 1000;
      out.ttft = null;
      out.ok = true;
      return out;
    }
    let last = null, chunksWithText = 0, usageSeen = false;
    for await (const { chunk: c, time: now } of sseEvents(res, () => performance.now())) {
      if (c.usage) { takeUsage(c.usage); usageSeen = true; }
      const hasText = (c.choices || []).some((ch) => (ch.delta ? ch.delta.content || ch.delta.reasoning_content : ch.text));
      if (hasText) {
        if (last === null) out.ttft = (now - t0) / 1000;
        else out.itl.push((now - last) / 1000);
        last = now;
        chunksWithText++;
      }
    }
    if (!usageSeen) out.outputTokens = chunksWithText; // server ignored include_usage: count chunks
    out.e2e = (performance.now() - t0) / 1000;
    out.ok = true;
  } catch (e) {
    out.error = e.name === 'AbortError' ? `timed out after ${opt.timeout} s` : String(e.message || e);
  } finally {
    clearTimeout(timer);
  }
  return out;
}

// ---------------------------------------------------------------- statistics
function percentile(xs, p) {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * p / 100, lo = Math.floor(pos), hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}
const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const ms = (x) => (Number.isFinite(x) ? (x * 1000).toFixed(0) : 'n/a');

// ---------------------------------------------------------------- main
async function main() {
  if (!opt.model) {
    const r = await fetch(opt.baseUrl + '/models', { headers });
    if (r.status !== 200) usage(`GET ${opt.baseUrl}/models: HTTP ${r.status}; pass --model`);
    opt.model = (await r.json()).data[0].id;
  }
  const cpus = os.cpus();
  console.log(`machine: ${cpus.length ? cpus[0].model.trim() : 'unknown CPU'}, ${cpus.length} cores ` +
    `(os.cpus), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ${os.platform()} ${os.release()}, node ${process.version}; ` +
    `load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`server: ${opt.baseUrl}  model: ${opt.model}  endpoint: ${opt.endpoint}  stream: ${opt.stream}  ` +
    `ignore_eos: ${opt.ignoreEos}  temperature: ${opt.temperature}`);

  // calibration: prompt_tokens for a known number of words; then a secant step (the chat
  // template adds a fixed number of tokens), three requests at most
  const measure = async (w, it) => {
    const r = await fetch(endpointUrl(), { method: 'POST', headers, body: body(promptText(-1 - it, w), 1, false) });
    if (r.status !== 200) usage(`calibration request: HTTP ${r.status}: ${(await r.text()).slice(0, 300)}`);
    return (await r.json()).usage.prompt_tokens;
  };
  const close = (p) => Math.abs(p - opt.promptTokens) <= Math.max(1, opt.promptTokens * 0.03);
  let words = Math.max(1, Math.round(opt.promptTokens * 0.8));
  let measured = await measure(words, 0);
  let pw = 0, pm = 0; // the previous point: 0 words -> ~0 tokens as a first guess of the overhead
  for (let it = 1; it < 3 && !close(measured); it++) {
    const slope = Math.max(0.2, (measured - pm) / Math.max(1, words - pw));
    const w2 = Math.max(1, Math.round(words + (opt.promptTokens - measured) / slope));
    [pw, pm] = [words, measured];
    words = w2;
    measured = await measure(words, it);
  }
  console.log(`prompts: ${words} words each (calibration: ${measured} prompt tokens for target ${opt.promptTokens})`);

  if (opt.header) {
    console.log();
    console.log('| model | conc | reqs | prompt tok | out tok | req/s | out tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | E2E p50 s | E2E p99 s | errors | wall s | cached tok | load |');
    console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  }
  let runIndex = 0;
  for (const conc of opt.concurrency) {
    const n = opt.requests || Math.max(8, 4 * conc);
    const texts = Array.from({ length: n }, (_, i) => promptText(runIndex * 100000 + i, words));
    runIndex++;
    const load0 = os.loadavg()[0];
    const results = [];
    let next = 0;
    const t0 = performance.now();
    const worker = async () => {
      while (next < n) {
        const i = next++;
        results[i] = await oneRequest(texts[i]);
      }
    };
    await Promise.all(Array.from({ length: Math.min(conc, n) }, worker));
    const wall = (performance.now() - t0) / 1000;
    const ok = results.filter((r) => r.ok), bad = results.filter((r) => !r.ok);
    const outTok = ok.reduce((a, r) => a + r.outputTokens, 0);
    const row = {
      label: opt.label || opt.model, concurrency: conc, requests: n, errors: bad.length, wall_s: wall,
      prompt_tokens_mean: mean(ok.map((r) => r.promptTokens)), output_tokens_mean: mean(ok.map((r) => r.outputTokens)),
      cached_tokens_mean: mean(ok.map((r) => r.cached)),
      req_per_s: ok.length / wall, output_tok_per_s: outTok / wall,
      ttft_p50: percentile(ok.map((r) => r.ttft).filter((x) => x !== null), 50),
      ttft_p99: percentile(ok.map((r) => r.ttft).filter((x) => x !== null), 99),
      itl_p50: percentile(ok.flatMap((r) => r.itl), 50), itl_p99: percentile(ok.flatMap((r) => r.itl), 99),
      e2e_p50: percentile(ok.map((r) => r.e2e), 50), e2e_p99: percentile(ok.map((r) => r.e2e), 99),
      load_start: load0, load_end: os.loadavg()[0],
    };
    console.log(`| ${row.label} | ${conc} | ${n} | ${f(row.prompt_tokens_mean, 0)} | ${f(row.output_tokens_mean, 0)} | ` +
      `${f(row.req_per_s, 3)} | ${f(row.output_tok_per_s, 1)} | ${ms(row.ttft_p50)} | ${ms(row.ttft_p99)} | ` +
      `${ms(row.itl_p50)} | ${ms(row.itl_p99)} | ${f(row.e2e_p50)} | ${f(row.e2e_p99)} | ${bad.length} | ${f(wall, 1)} | ${f(row.cached_tokens_mean, 0)} | ` +
      `${f(load0)}→${f(row.load_end)} |`);
    for (const r of bad.slice(0, 3)) console.error(`  error: ${r.error}`);
    if (bad.length > 3) console.error(`  ... and ${bad.length - 3} more errors`);
    if (opt.json) fs.appendFileSync(opt.json, JSON.stringify({ ...row, model: opt.model, base_url: opt.baseUrl,
      endpoint: opt.endpoint, stream: opt.stream, max_tokens: opt.maxTokens, prompt_tokens_target: opt.promptTokens,
      cpu: cpus.length ? cpus[0].model.trim() : null, cores: cpus.length, time: new Date().toISOString() }) + '\n');
  }
}

main().catch((e) => {
  console.error('bench-serving: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
