#!/usr/bin/env node
// scripts/bench-prefix.mjs — time to first token (TTFT) of a repeated long prompt,
// cold vs. served from the prefix cache. Node 20+, standard library only.
//
// Sequence: one cold request, then --repeats warm requests of the identical prompt,
// one at a time (streaming, temperature 0, ignore_eos, stream_options.include_usage).
// For each it records TTFT (request sent -> first chunk carrying text),
// usage.prompt_tokens and usage.prompt_tokens_details.cached_tokens, and the
// generated text, then prints a markdown table:
//
//   run | prompt tok | cached tok | expected cached | TTFT ms | E2E ms | out tok | same text as cold | max |Δ logprob|
//
// expected cached = floor((prompt_tokens - 1) / 64) * 64: the cache holds whole
// 64-token pages, and the last prompt token is always recomputed because its
// logits pick the first output token (engine/sched.c try_admit matches at most
// prompt_tokens - 1 tokens; engine/kv.h kv_prefix_match rounds down to pages).
// The cold run must report 0 (the prompt starts with a per-invocation nonce, so
// earlier runs against the same server cannot have cached any of its pages).
// Greedy output must be identical in every run. The last column, informational
// (not part of the pass/fail), is the largest difference between a run's sampled-token
// logprobs and the cold run's: how far the cached-prefix path's numerics drift from
// a full prefill (the cached pages are the same floats; the tail is computed in a
// different chunking).
//
// The prompt is deterministic text (fixed words from a seeded generator) after the
// nonce, sized to about --prompt-tokens with POST /tokenize (which counts BOS and,
// for chat, the chat template); no generation request is spent on sizing.
//
// Exit status: 0 when every warm run's cached tokens equal the expected count, the
// cold run's are 0, and every text equals the cold run's; 1 otherwise; 2 bad usage.
//
// Usage:
//   node scripts/bench-prefix.mjs --url http://127.0.0.1:8000 --prompt-tokens 2000 --repeats 5 --max-tokens 16
// Options:
//   --url URL            server root (a trailing /v1 is accepted) (default http://127.0.0.1:8000)
//   --model NAME         model id (default: the first of GET /v1/models)
//   --prompt-tokens N    approximate prompt length in tokens, as the server counts them (default 2000)
//   --repeats K          warm repeats after the cold request (default 5)
//   --max-tokens M       output tokens per request (ignore_eos: exactly M) (default 16)
//   --endpoint completions|chat   (default completions)
//   --page-tokens P      KV page size for the expected count (default 64, KV_PAGE_TOKENS)
//   --warmup N           untimed requests first, same length but another nonce, so no page
//                        is shared (default 1): the cold run then measures prefill, not the
//                        first touch of memory-mapped weights or allocator growth
//   --seed N             seed for the prompt words (default 1)
//   --api-key KEY        sent as Authorization: Bearer (default $OPENAI_API_KEY, if set)
//   --timeout S          per-request limit in seconds (default 900)
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { WORDS, rng, sseEvents } from './lib/bench-util.mjs';

function usage(msg) {
  if (msg) console.error('bench-prefix: ' + msg);
  console.error('usage: node scripts/bench-prefix.mjs --url URL [--model NAME] [--prompt-tokens N] [--repeats K] ' +
    '[--max-tokens M] [--endpoint completions|chat] [--page-tokens P] [--warmup N] [--seed N] [--api-key KEY] [--timeout S]');
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    url: 'http://127.0.0.1:8000', model: null, promptTokens: 2000, repeats: 5, maxTokens: 16,
    endpoint: 'completions', pageTokens: 64, seed: 1, warmup: 1, apiKey: process.env.OPENAI_API_KEY || null, timeout: 900,
  };
  const num = (v, name, min) => {
    const x = Number(v);
    if (v === undefined || !Number.isFinite(x) || x < min) usage(`${name}: want a number >= ${min}, got ${v}`);
    return x;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [k, v] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const val = () => (v !== undefined ? v : argv[++i]);
    switch (k) {
      case '--url': o.url = String(val()).replace(/\/+$/, '').replace(/\/v1$/, ''); break;
      case '--model': o.model = val(); break;
      case '--prompt-tokens': o.promptTokens = Math.trunc(num(val(), k, 2)); break;
      case '--repeats': o.repeats = Math.trunc(num(val(), k, 1)); break;
      case '--max-tokens': o.maxTokens = Math.trunc(num(val(), k, 1)); break;
      case '--endpoint': o.endpoint = val(); if (!['chat', 'completions'].includes(o.endpoint)) usage(`${k}: chat or completions`); break;
      case '--page-tokens': o.pageTokens = Math.trunc(num(val(), k, 1)); break;
      case '--warmup': o.warmup = Math.trunc(num(val(), k, 0)); break;
      case '--seed': o.seed = Math.trunc(num(val(), k, 0)); break;
      case '--api-key': o.apiKey = val(); break;
      case '--timeout': o.timeout = num(val(), k, 1); break;
      case '-h': case '--help': usage(); break;
      default: usage('unknown option ' + a);
    }
  }
  return o;
}

const opt = parseArgs(process.argv.slice(2));
const headers = { 'content-type': 'application/json' };
if (opt.apiKey) headers.authorization = 'Bearer ' + opt.apiKey;

// ---------------------------------------------------------------- the prompt

const NONCE = randomBytes(6).toString('hex');
// The nonce comes first: it changes the first page's tokens, and with them the
// chained hash of every later page, so nothing cached before this run can match.
function promptText(nWords, nonce = NONCE) {
  const r = rng(opt.seed * 1000003 + 17);
  const w = [`Session ${nonce}. Notes:`];
  for (let i = 0; i < nWords; i++) w.push(WORDS[Math.floor(r() * WORDS.length)] + ((i % 12) === 11 ? '.' : ''));
  return w.join(' ');
}

function genBody(text) {
  const b = { model: opt.model, max_tokens: opt.maxTokens, temperature: 0, ignore_eos: true,
    stream: true, stream_options: { include_usage: true } };
  if (opt.endpoint === 'chat') { b.messages = [{ role: 'user', content: text }]; b.logprobs = true; }
  else { b.prompt = text; b.logprobs = 1; }
  return JSON.stringify(b);
}

async function tokenCount(text) {
  const b = opt.endpoint === 'chat'
    ? { model: opt.model, messages: [{ role: 'user', content: text }], add_generation_prompt: true }
    : { model: opt.model, prompt: text };
  const r = await fetch(opt.url + '/tokenize', { method: 'POST', headers, body: JSON.stringify(b) });
  if (r.status !== 200) usage(`POST ${opt.url}/tokenize: HTTP ${r.status}: ${(await r.text()).slice(0, 300)}`);
  return (await r.json()).count;
}

// Words -> tokens is close to linear; a few secant steps, then a final walk of
// single words, land within a token or two of the target.
async function sizePrompt(target) {
  let words = Math.max(1, Math.round(target * 0.8));
  let n = await tokenCount(promptText(words));
  let pw = 0, pn = await tokenCount(promptText(0));
  for (let it = 0; it < 6 && Math.abs(n - target) > 2; it++) {
    const slope = Math.max(0.2, (n - pn) / Math.max(1, words - pw));
    const w2 = Math.max(1, Math.round(words + (target - n) / slope));
    if (w2 === words) break;
    [pw, pn] = [words, n];
    words = w2;
    n = await tokenCount(promptText(words));
  }
  return { words, text: promptText(words), tokens: n };
}

// ---------------------------------------------------------------- one request
async function oneRequest(text) {
  const url = opt.url + '/v1' + (opt.endpoint === 'chat' ? '/chat/completions' : '/completions');
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), opt.timeout * 1000);
  const out = { ttft: null, e2e: null, promptTokens: null, cached: null, outputTokens: null, text: '', logprobs: [] };
  const t0 = performance.now();
  try {
    const res = await fetch(url, { method: 'POST', headers, body: genBody(text), signal: ctl.signal });
    if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${(await res.text().catch(() => '')).slice(0, 300)}`);
    for await (const { chunk: c, time: now } of sseEvents(res, () => performance.now())) {
      if (c.usage) {
        out.promptTokens = c.usage.prompt_tokens;
        out.outputTokens = c.usage.completion_tokens;
        out.cached = (c.usage.prompt_tokens_details && c.usage.prompt_tokens_details.cached_tokens) || 0;
      }
      for (const ch of c.choices || []) {
        const t = ch.delta ? (ch.delta.reasoning_content || '') + (ch.delta.content || '') : (ch.text || '');
        if (t && out.ttft === null) out.ttft = now - t0;
        out.text += t;
        const lp = ch.logprobs;
        if (lp && Array.isArray(lp.token_logprobs)) out.logprobs.push(...lp.token_logprobs);
        else if (lp && Array.isArray(lp.content)) out.logprobs.push(...lp.content.map((x) => x.logprob));
      }
    }
    out.e2e = performance.now() - t0;
  } catch (e) {
    throw new Error(e.name === 'AbortError' ? `timed out after ${opt.timeout} s` : String(e.message || e));
  } finally {
    clearTimeout(timer);
  }
  return out;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2 : NaN;
};
const lpDiff = (r, c) => {
  if (!r.logprobs.length || r.logprobs.length !== c.logprobs.length) return 'n/a';
  return Math.max(...r.logprobs.map((x, i) => Math.abs(x - c.logprobs[i]))).toExponential(1);
};
const loadavg = () => os.loadavg().map((x) => x.toFixed(2)).join(' ');

// ---------------------------------------------------------------- main
async function main() {
  if (!opt.model) {
    const r = await fetch(opt.url + '/v1/models', { headers });
    if (r.status !== 200) usage(`GET ${opt.url}/v1/models: HTTP ${r.status}; pass --model`);
    opt.model = (await r.json()).data[0].id;
  }
  const cpus = os.cpus();
  console.log(`machine: ${cpus.length ? cpus[0].model.trim() : 'unknown CPU'}, nproc ${os.availableParallelism()}, ` +
    `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, node ${process.version}; load average ${loadavg()} (start)`);
  const p = await sizePrompt(opt.promptTokens);
  console.log(`server: ${opt.url}  model: ${opt.model}  endpoint: ${opt.endpoint}  nonce: ${NONCE}  ` +
    `prompt: ${p.words} words = ${p.tokens} tokens (/tokenize; target ${opt.promptTokens})  max_tokens: ${opt.maxTokens}  ` +
    `temperature 0, ignore_eos`);

  for (let i = 0; i < opt.warmup; i++) {
    const r = await oneRequest(promptText(p.words, `${NONCE}w${i}`));
    console.log(`warmup ${i + 1}/${opt.warmup} (other nonce, not counted): prompt ${r.promptTokens} tok, cached ${r.cached}, ` +
      `TTFT ${r.ttft === null ? 'n/a' : r.ttft.toFixed(0)} ms`);
  }
  const runs = [];
  for (let i = 0; i <= opt.repeats; i++) {
    const r = await oneRequest(p.text);
    r.name = i === 0 ? 'cold' : `warm ${i}`;
    runs.push(r);
  }

  const P = opt.pageTokens;
  const cold = runs[0];
  let ok = true;
  console.log();
  console.log('| run | prompt tok | cached tok | expected cached | TTFT ms | E2E ms | out tok | same text as cold | max \\|Δ logprob\\| |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---|---:|');
  for (const r of runs) {
    const expect = r === cold ? 0 : Math.floor((r.promptTokens - 1) / P) * P;
    const same = r.text === cold.text;
    const cachedOk = r.cached === expect;
    if (!same || !cachedOk || r.promptTokens !== p.tokens) ok = false;
    console.log(`| ${r.name} | ${r.promptTokens} | ${r.cached} | ${expect}${cachedOk ? '' : ' **MISMATCH**'} | ` +
      `${r.ttft === null ? 'n/a' : r.ttft.toFixed(0)} | ${r.e2e.toFixed(0)} | ${r.outputTokens} | ` +
      `${r === cold ? '(reference)' : same ? 'yes' : '**no**'} | ${r === cold ? '' : lpDiff(r, cold)} |`);
  }
  const warm = runs.slice(1).map((r) => r.ttft).filter((x) => x !== null);
  const wm = median(warm);
  console.log();
  console.log(`TTFT cold ${cold.ttft.toFixed(0)} ms, warm median ${wm.toFixed(0)} ms (min ${Math.min(...warm).toFixed(0)}, ` +
    `max ${Math.max(...warm).toFixed(0)}): speedup cold/warm median ${(cold.ttft / wm).toFixed(2)}x`);
  console.log(`cold text (${cold.text.length} chars): ${JSON.stringify(cold.text.slice(0, 80))}${cold.text.length > 80 ? '…' : ''}`);
  if (p.tokens !== cold.promptTokens)
    console.log(`note: /tokenize counted ${p.tokens} tokens, usage.prompt_tokens says ${cold.promptTokens}`);
  console.log(`load average ${loadavg()} (end)`);
  console.log(ok ? 'result: OK (cached tokens as expected, identical greedy text)' : 'result: FAIL');
  process.exit(ok ? 0 : 1);
}

main().catch((e) => {
  console.error('bench-prefix: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
