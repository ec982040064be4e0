// test/integration/bad_input.mjs — the bad-input matrix of issue #6 through the
// real HTTP stack: each case gets the right status and an OpenAI error object
// {"error":{"message","type","param","code"}} (param checked where one applies),
// and a normal request is answered afterwards. Also: a slowloris-style client
// holding many half-sent requests does not stop normal service.
// Usage: node bad_input.mjs BASE_URL API_KEY MODEL    (prints "N passed, N failed")
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, key, model] = process.argv.slice(2);
const auth = { Authorization: `Bearer ${key}` };
const json = { 'Content-Type': 'application/json' };
let passed = 0, failed = 0;

function report(ok, name, detail) {
  if (ok) passed++; else { failed++; console.log(`FAIL: ${name}: ${detail}`); }
}

async function call(method, path, body, headers = { ...auth, ...json }) {
  const res = await fetch(base + path, { method, headers, body, signal: AbortSignal.timeout(60000) });
  const text = await res.text();
  let j = null;
  try { j = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, j, text };
}

const chat = (extra) => JSON.stringify({ model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4, ...extra });
const cmpl = (extra) => JSON.stringify({ model, prompt: 'Hi', max_tokens: 4, ...extra });
const long = 'word '.repeat(400);

// [name, method, path, body (string|Buffer|null), expected status, expected param (undefined = not checked), headers]
const cases = [
  ['malformed JSON', 'POST', '/v1/chat/completions', '{"model": "x", ', 400],
  ['JSON not an object', 'POST', '/v1/chat/completions', '[1,2,3]', 400],
  ['empty body', 'POST', '/v1/chat/completions', '', 400],
  ['trailing garbage', 'POST', '/v1/chat/completions', chat({}) + 'xyz', 400],
  ['missing messages', 'POST', '/v1/chat/completions', JSON.stringify({ model, max_tokens: 4 }), 400, 'messages'],
  ['messages not an array', 'POST', '/v1/chat/completions', JSON.stringify({ model, messages: 'hi' }), 400, 'messages'],
  ['empty messages', 'POST', '/v1/chat/completions', JSON.stringify({ model, messages: [] }), 400, 'messages'],
  ['message not an object', 'POST', '/v1/chat/completions', JSON.stringify({ model, messages: [42] }), 400],
  ['unknown role', 'POST', '/v1/chat/completions', JSON.stringify({ model, messages: [{ role: 'wizard', content: 'x' }] }), 400],
  ['content wrong type', 'POST', '/v1/chat/completions', JSON.stringify({ model, messages: [{ role: 'user', content: 42 }] }), 400],
  ['content part wrong type', 'POST', '/v1/chat/completions', JSON.stringify({ model, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }), 400],
  ['missing model', 'POST', '/v1/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: 'x' }] }), 400, 'model'],
  ['unknown model', 'POST', '/v1/chat/completions', chat({ model: 'gpt-17' }), 404, 'model'],
  ['model wrong type', 'POST', '/v1/chat/completions', chat({ model: 7 }), 400, 'model'],
  ['max_tokens zero', 'POST', '/v1/chat/completions', chat({ max_tokens: 0 }), 400, 'max_tokens'],
  ['max_tokens negative', 'POST', '/v1/chat/completions', chat({ max_tokens: -5 }), 400, 'max_tokens'],
  ['max_tokens huge', 'POST', '/v1/chat/completions', chat({ max_tokens: 1e12 }), 400, 'max_tokens'],
  ['max_tokens string', 'POST', '/v1/chat/completions', chat({ max_tokens: '4' }), 400, 'max_tokens'],
  ['max_tokens float', 'POST', '/v1/chat/completions', chat({ max_tokens: 4.5 }), 400, 'max_tokens'],
  ['temperature negative', 'POST', '/v1/chat/completions', chat({ temperature: -1 }), 400, 'temperature'],
  ['temperature NaN (string)', 'POST', '/v1/chat/completions', chat({ temperature: 'NaN' }), 400, 'temperature'],
  ['temperature NaN literal', 'POST', '/v1/chat/completions', chat({}).replace('"max_tokens":4', '"max_tokens":4,"temperature":NaN'), 400],
  ['top_p zero', 'POST', '/v1/chat/completions', chat({ top_p: 0 }), 400, 'top_p'],
  ['top_p above 1', 'POST', '/v1/chat/completions', chat({ top_p: 1.5 }), 400, 'top_p'],
  ['top_k wrong type', 'POST', '/v1/chat/completions', chat({ top_k: 'many' }), 400, 'top_k'],
  ['min_p above 1', 'POST', '/v1/chat/completions', chat({ min_p: 2 }), 400, 'min_p'],
  ['presence_penalty out of range', 'POST', '/v1/chat/completions', chat({ presence_penalty: 5 }), 400, 'presence_penalty'],
  ['frequency_penalty out of range', 'POST', '/v1/chat/completions', chat({ frequency_penalty: -9 }), 400, 'frequency_penalty'],
  ['repetition_penalty zero', 'POST', '/v1/chat/completions', chat({ repetition_penalty: 0 }), 400, 'repetition_penalty'],
  ['n zero', 'POST', '/v1/chat/completions', chat({ n: 0 }), 400, 'n'],
  ['n too large', 'POST', '/v1/chat/completions', chat({ n: 100000 }), 400, 'n'],
  ['stream wrong type', 'POST', '/v1/chat/completions', chat({ stream: 'yes' }), 400, 'stream'],
  ['stop wrong type', 'POST', '/v1/chat/completions', chat({ stop: 42 }), 400, 'stop'],
  ['stop with 100 strings', 'POST', '/v1/chat/completions', chat({ stop: Array.from({ length: 100 }, (_, i) => `s${i}`) }), 400, 'stop'],
  ['seed wrong type', 'POST', '/v1/chat/completions', chat({ seed: 'x' }), 400, 'seed'],
  ['top_logprobs too large', 'POST', '/v1/chat/completions', chat({ logprobs: true, top_logprobs: 500 }), 400, 'top_logprobs'],
  ['logprobs wrong type', 'POST', '/v1/chat/completions', chat({ logprobs: 'x' }), 400, 'logprobs'],
  ['prompt over the context', 'POST', '/v1/chat/completions', JSON.stringify({ model, messages: [{ role: 'user', content: long }], max_tokens: 4 }), 400],
  ['prompt + max_tokens over the context', 'POST', '/v1/chat/completions', chat({ max_tokens: 255 }), 400, 'max_tokens'],
  ['invalid UTF-8 in content', 'POST', '/v1/chat/completions', Buffer.concat([Buffer.from(`{"model":"${model}","messages":[{"role":"user","content":"ab`), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}],"max_tokens":4}')]), 400],
  ['completions: prompt missing', 'POST', '/v1/completions', JSON.stringify({ model, max_tokens: 4 }), 400, 'prompt'],
  ['completions: prompt wrong type', 'POST', '/v1/completions', cmpl({ prompt: 42 }), 400, 'prompt'],
  ['completions: token id out of range', 'POST', '/v1/completions', cmpl({ prompt: [1, 2, 99999999] }), 400, 'prompt'],
  ['completions: empty token array', 'POST', '/v1/completions', cmpl({ prompt: [] }), 400, 'prompt'],
  ['completions: logprobs too large', 'POST', '/v1/completions', cmpl({ logprobs: 99 }), 400, 'logprobs'],
  ['missing Authorization', 'POST', '/v1/chat/completions', chat({}), 401, undefined, json],
  ['wrong API key', 'POST', '/v1/chat/completions', chat({}), 401, undefined, { ...json, Authorization: 'Bearer nope' }],
  ['malformed Authorization', 'POST', '/v1/chat/completions', chat({}), 401, undefined, { ...json, Authorization: 'Basic abc' }],
  ['wrong method on chat', 'GET', '/v1/chat/completions', null, 405],
  ['wrong method on models', 'POST', '/v1/models', '{}', 405],
  ['unknown route', 'GET', '/v2/everything', null, 404],
  ['unknown route under v1', 'POST', '/v1/embeddings', '{}', 404],
  ['tokenize: wrong type', 'POST', '/tokenize', JSON.stringify({ model, prompt: 5 }), 400],
  ['detokenize: ids not numbers', 'POST', '/detokenize', JSON.stringify({ model, tokens: ['a'] }), 400],
  ['tools not an array', 'POST', '/v1/chat/completions', chat({ tools: { type: 'function' } }), 400, 'tools'],
  ['tool without a name', 'POST', '/v1/chat/completions', chat({ tools: [{ type: 'function', function: {} }] }), 400, 'tools'],
  ['tool_choice without tools', 'POST', '/v1/chat/completions', chat({ tool_choice: 'required' }), 400, 'tool_choice'],
  ['tool_choice names an unknown tool', 'POST', '/v1/chat/completions', chat({ tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: { type: 'function', function: { name: 'g' } } }), 400, 'tool_choice'],
  ['response_format unknown type', 'POST', '/v1/chat/completions', chat({ response_format: { type: 'xml' } }), 400, 'response_format'],
  ['json_schema without schema', 'POST', '/v1/chat/completions', chat({ response_format: { type: 'json_schema', json_schema: { name: 'x' } } }), 400, 'response_format'],
  ['json_schema unsupported keyword', 'POST', '/v1/chat/completions', chat({ max_tokens: 40, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'array', uniqueItems: true } } } }), 400, 'response_format'],
  ['json_schema pattern that does not parse', 'POST', '/v1/chat/completions', chat({ max_tokens: 40, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', pattern: '(a' } } } }), 400, 'response_format'],
  ['guided_regex too complex', 'POST', '/v1/chat/completions', chat({ max_tokens: 40, guided_regex: '(a|b)*a(a|b){14}' }), 400, 'guided_regex'],
  ['json_schema nested 100 deep', 'POST', '/v1/chat/completions', chat({ max_tokens: 40, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: JSON.parse('{"type":"array","items":'.repeat(100) + '{"type":"integer"}' + '}'.repeat(100)) } } }), 400, 'response_format'],
  ['include_reasoning wrong type', 'POST', '/v1/chat/completions', chat({ include_reasoning: 'yes' }), 400, 'include_reasoning'],
];

async function normalRequest(tag) {
  const r = await call('POST', '/v1/chat/completions', chat({}));
  report(r.status === 200 && r.j?.choices?.length === 1, `normal request ${tag}`, `${r.status} ${r.text.slice(0, 200)}`);
}

for (const [name, method, path, body, status, param, headers] of cases) {
  let r;
  try { r = await call(method, path, body, headers); } catch (e) { report(false, name, `request failed: ${e.message}`); continue; }
  const e = r.j?.error;
  const shape = e && typeof e.message === 'string' && e.message.length > 0 && typeof e.type === 'string' &&
    'param' in e && 'code' in e;
  let ok = r.status === status && shape;
  if (ok && param !== undefined) ok = e.param === param;
  if (ok && /\/(work|tmp|home)\//.test(e.message)) ok = false; // no server paths in messages
  report(ok, name, `status ${r.status} (want ${status}), param ${e?.param} (want ${param}), body ${r.text.slice(0, 160)}`);
}
// A 10 MB body: the server answers 413 as soon as it sees Content-Length and closes
// (fetch reports the closed upload as an error, so curl reads the answer here).
{
  const dir = mkdtempSync(join(tmpdir(), 'mlaserve-big-'));
  const file = join(dir, 'body.json');
  writeFileSync(file, JSON.stringify({ model, messages: [{ role: 'user', content: 'x'.repeat(10 << 20) }] }));
  let out = '';
  try {
    out = execFileSync('curl', ['-s', '-m', '60', '-w', '\n%{http_code}', '-H', `Authorization: Bearer ${key}`,
      '-H', 'Content-Type: application/json', '--data-binary', `@${file}`, `${base}/v1/chat/completions`]).toString();
  } catch (e) { out = e.stdout?.toString() ?? ''; }
  rmSync(dir, { recursive: true, force: true });
  const lines = out.trim().split('\n');
  const status = lines.pop();
  let j = null;
  try { j = JSON.parse(lines.join('\n')); } catch { /* not JSON */ }
  report(status === '413' && typeof j?.error?.message === 'string', 'body of 10 MB', `status ${status}, body ${lines.join(' ').slice(0, 160)}`);
}
await normalRequest('after the matrix');

// slowloris: 20 connections that send a request line and then one header byte per second
const sockets = [];
for (let i = 0; i < 20; i++) {
  const s = net.connect(new URL(base).port, '127.0.0.1');
  s.on('error', () => {});
  s.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n');
  sockets.push(s);
}
const drip = setInterval(() => sockets.forEach((s) => s.writable && s.write('X')), 1000);
await new Promise((r) => setTimeout(r, 1500));
await normalRequest('while 20 slow clients hold connections');
clearInterval(drip);
sockets.forEach((s) => s.destroy());
await normalRequest('after the slow clients left');

console.log(`bad_input: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
