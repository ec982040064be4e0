// test/integration/openai_sdk.mjs — the official `openai` npm client against a
// running `mlaserve serve` (started by test/cli/server.sh).
//
// Reference: the server's own greedy output (temperature 0) is the oracle for
// the streaming and seed checks (a stream must concatenate to the same text as
// the non-stream answer; the same seed must give the same sample); shapes and
// error classes are those the SDK itself defines.
// Env: MLASERVE_BASE_URL (http://127.0.0.1:PORT/v1), MLASERVE_API_KEY, MLASERVE_MODEL_NAME.
// Exit status 0 when every check passed.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.MLASERVE_BASE_URL;
const apiKey = process.env.MLASERVE_API_KEY || 'none';
const model = process.env.MLASERVE_MODEL_NAME;
if (!baseURL || !model) {
  console.error('openai_sdk: set MLASERVE_BASE_URL and MLASERVE_MODEL_NAME');
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120_000 });
const messages = [{ role: 'user', content: 'Tell me about the sea.' }];
let passed = 0;
const failures = [];

async function check(name, fn) {
  try {
    await fn();
    passed++;
  } catch (e) {
    failures.push(`${name}: ${e && e.stack ? e.stack : e}`);
  }
}

async function expectError(cls, status, fn, param) {
  let err = null;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected ${cls.name}, got success`);
  assert.ok(err instanceof cls, `expected ${cls.name}, got ${err && err.constructor && err.constructor.name}: ${err}`);
  assert.equal(err.status, status);
  if (param !== undefined) assert.equal(err.param, param);
}

let greedy = null;
await check('models.list', async () => {
  const list = await client.models.list();
  assert.equal(list.data[0].id, model);
  const m = await client.models.retrieve(model);
  assert.equal(m.id, model);
});

await check('chat non-stream', async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 0, ignore_eos: true });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.model, model);
  assert.equal(typeof r.created, 'number');
  assert.equal(typeof r.system_fingerprint, 'string');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 10);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 10);
  greedy = r.choices[0].message.content;
  assert.ok(greedy.length > 0);
});

await check('chat stream with include_usage', async () => {
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 10, temperature: 0, ignore_eos: true, stream: true,
    stream_options: { include_usage: true },
  });
  let text = '', role = null, finish = [], usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta.role) role = c.delta.role;
      if (c.delta.content) text += c.delta.content;
      if (c.finish_reason) finish.push(c.finish_reason);
    }
  }
  assert.equal(role, 'assistant');
  assert.deepEqual(finish, ['length']);
  assert.equal(text, greedy, 'stream concatenation differs from the non-stream answer');
  assert.ok(usage && usage.completion_tokens === 10, `usage ${JSON.stringify(usage)}`);
  assert.ok(chunks >= 10, `only ${chunks} chunks for 10 tokens`);
});

await check('chat logprobs', async () => {
  const r = await client.chat.completions.create({
    model, messages, max_tokens: 5, temperature: 0, ignore_eos: true, logprobs: true, top_logprobs: 3,
  });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, 5);
  for (const e of content) {
    assert.equal(typeof e.token, 'string');
    assert.ok(e.logprob <= 0);
    assert.equal(e.top_logprobs.length, 3);
    // greedy: the chosen token is the most likely one
    assert.equal(e.top_logprobs[0].logprob, e.logprob);
  }
});

await check('completions', async () => {
  const r = await client.completions.create({ model, prompt: 'The sea is', max_tokens: 6, temperature: 0, ignore_eos: true, logprobs: 2 });
  assert.equal(r.object, 'text_completion');
  assert.match(r.id, /^cmpl-/);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 6);
  assert.equal(r.choices[0].logprobs.tokens.length, 6);
  assert.equal(r.choices[0].logprobs.tokens.join(''), r.choices[0].text);
  const s = await client.completions.create({ model, prompt: 'The sea is', max_tokens: 6, temperature: 0, ignore_eos: true, stream: true });
  let text = '';
  for await (const chunk of s) for (const c of chunk.choices) text += c.text;
  assert.equal(text, r.choices[0].text);
});

// Scoring as lm-eval-harness does (echo + logprobs, token-id prompt): the
// greedy continuation of a prompt, scored as part of the prompt, has the
// logprobs it was generated with and is the top alternative at each step.
await check('prompt logprobs: echo + logprobs scores the prompt', async () => {
  const { tokens: ids } = await (await fetch(baseURL.replace(/\/v1$/, '') + '/tokenize', {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({ model, prompt: 'The sea is deep and' }),
  })).json();
  assert.ok(ids.length >= 3, `tokenized: ${ids}`);
  const gen = await client.completions.create({ model, prompt: ids, max_tokens: 6, temperature: 0, ignore_eos: true, logprobs: 1 });
  const genLp = gen.choices[0].logprobs;
  const cont = await (await fetch(baseURL.replace(/\/v1$/, '') + '/tokenize', {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({ model, prompt: gen.choices[0].text, add_special_tokens: false }),
  })).json();
  const full = ids.concat(cont.tokens);
  const sc = await client.completions.create({ model, prompt: full, max_tokens: 0, echo: true, logprobs: 1, temperature: 0 });
  const lp = sc.choices[0].logprobs;
  assert.equal(sc.choices[0].finish_reason, 'length');
  assert.equal(sc.usage.completion_tokens, 0);
  assert.equal(lp.tokens.length, full.length);
  assert.equal(lp.token_logprobs[0], null);
  assert.equal(lp.top_logprobs[0], null);
  for (let i = 1; i < full.length; i++) {
    assert.equal(typeof lp.token_logprobs[i], 'number');
    assert.ok(lp.token_logprobs[i] <= 0, `logprob ${lp.token_logprobs[i]} at ${i}`);
    assert.ok(lp.text_offset[i] >= lp.text_offset[i - 1]);
  }
  if (cont.tokens.length === genLp.tokens.length) { // the continuation re-tokenizes to the same tokens
    for (let k = 0; k < cont.tokens.length; k++) {
      const i = ids.length + k;
      assert.ok(Math.abs(lp.token_logprobs[i] - genLp.token_logprobs[k]) < 1e-3, `token ${k}: ${lp.token_logprobs[i]} vs ${genLp.token_logprobs[k]}`);
      assert.equal(Math.max(...Object.values(lp.top_logprobs[i])), lp.token_logprobs[i], `token ${k} is greedy`);
    }
  }
  // lm-eval's own request: max_tokens 1, the last entry is the generated token
  const one = await client.completions.create({ model, prompt: full, max_tokens: 1, echo: true, logprobs: 1, temperature: 0 });
  assert.equal(one.choices[0].logprobs.tokens.length, full.length + 1);
  assert.deepEqual(one.choices[0].logprobs.token_logprobs.slice(0, full.length), lp.token_logprobs);
  // streaming: the echo chunk carries the prompt's logprobs
  const s = await client.completions.create({ model, prompt: full, max_tokens: 2, echo: true, logprobs: 1, temperature: 0, ignore_eos: true, stream: true });
  const chunks = [];
  for await (const chunk of s) chunks.push(chunk);
  const first = chunks[0].choices[0];
  assert.equal(first.logprobs.tokens.length, full.length);
  assert.deepEqual(first.logprobs.token_logprobs, lp.token_logprobs);
  await expectError(OpenAI.BadRequestError, 400, () =>
    client.completions.create({ model, prompt: 'x', max_tokens: 0 }), 'max_tokens');
});

await check('n=2 and seed reproducibility', async () => {
  const req = { model, messages, max_tokens: 8, temperature: 1.0, seed: 1234, n: 2, ignore_eos: true };
  const a = await client.chat.completions.create(req);
  const b = await client.chat.completions.create(req);
  assert.equal(a.choices.length, 2);
  assert.deepEqual(a.choices.map((c) => c.index), [0, 1]);
  assert.deepEqual(a.choices.map((c) => c.message.content), b.choices.map((c) => c.message.content));
  assert.equal(a.usage.completion_tokens, 16);
});

await check('seed reproducibility at temperature > 0', async () => {
  const req = { model, messages, max_tokens: 16, temperature: 0.9, top_p: 0.95, ignore_eos: true };
  const text = async (seed) => (await client.chat.completions.create({ ...req, seed })).choices[0].message.content;
  const a = await text(42), b = await text(42);
  assert.equal(a, b, 'same seed, different text');
  // the seed alone decides the sample: streaming with it gives the same text
  const s = await client.chat.completions.create({ ...req, seed: 42, stream: true });
  let streamed = '';
  for await (const chunk of s) for (const c of chunk.choices) streamed += c.delta.content || '';
  assert.equal(streamed, a, 'same seed, streamed text differs');
  // different seeds: 16 tokens sampled at temperature 0.9 from a 129k vocabulary; all three
  // equal would be a seed that is ignored
  const c = await text(43), d = await text(1 << 30);
  assert.ok(!(c === a && d === a), `seeds 42, 43 and 2^30 all gave ${JSON.stringify(a)}`);
  assert.notEqual(a, greedy, 'temperature 0.9 gave the greedy text');
  // completions too
  const creq = { model, prompt: 'The sea is', max_tokens: 12, temperature: 1.0, ignore_eos: true };
  const x = await client.completions.create({ ...creq, seed: 5 });
  const y = await client.completions.create({ ...creq, seed: 5 });
  const z = await client.completions.create({ ...creq, seed: 6 });
  assert.equal(x.choices[0].text, y.choices[0].text);
  assert.notEqual(x.choices[0].text, z.choices[0].text);
});

await check('stream include_usage: one usage chunk at the end, none without it', async () => {
  const req = { model, messages, max_tokens: 7, temperature: 0, ignore_eos: true, stream: true };
  const chunks = [];
  for await (const chunk of await client.chat.completions.create({ ...req, stream_options: { include_usage: true } }))
    chunks.push(chunk);
  const withUsage = chunks.filter((c) => c.usage);
  assert.equal(withUsage.length, 1, 'usage chunks: ' + withUsage.length);
  const last = chunks[chunks.length - 1];
  assert.equal(last, withUsage[0], 'the usage chunk is not the last one');
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 7);
  assert.ok(last.usage.prompt_tokens > 0);
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + 7);
  for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null, 'a content chunk has usage ' + JSON.stringify(c.usage));
  const plain = [];
  for await (const chunk of await client.chat.completions.create(req)) plain.push(chunk);
  assert.ok(plain.every((c) => !c.usage), 'usage sent without include_usage');
  assert.ok(plain.every((c) => c.choices.length === 1));
  // completions stream with include_usage
  let cu = null;
  for await (const chunk of await client.completions.create({ model, prompt: 'The sea is', max_tokens: 5, temperature: 0,
    ignore_eos: true, stream: true, stream_options: { include_usage: true } })) if (chunk.usage) cu = chunk.usage;
  assert.ok(cu && cu.completion_tokens === 5, 'completions usage ' + JSON.stringify(cu));
});

await check('chat logprobs + top_logprobs: shape and values', async () => {
  const r = await client.chat.completions.create({
    model, messages, max_tokens: 6, temperature: 0, ignore_eos: true, logprobs: true, top_logprobs: 5,
  });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, 6);
  assert.equal(content.map((e) => e.token).join(''), r.choices[0].message.content);
  for (const e of content) {
    assert.ok(Number.isFinite(e.logprob) && e.logprob <= 0, 'logprob ' + e.logprob);
    assert.ok(Array.isArray(e.bytes) && e.bytes.every((b) => Number.isInteger(b) && b >= 0 && b < 256));
    assert.equal(e.top_logprobs.length, 5);
    let prev = 0, mass = 0;
    for (const t of e.top_logprobs) {
      assert.equal(typeof t.token, 'string');
      assert.ok(Array.isArray(t.bytes));
      assert.ok(Number.isFinite(t.logprob) && t.logprob <= 0, 'top logprob ' + t.logprob);
      assert.ok(t.logprob <= prev + 1e-6, 'top_logprobs not sorted');
      prev = t.logprob;
      mass += Math.exp(t.logprob);
    }
    assert.ok(mass <= 1 + 1e-4, 'top-5 probabilities sum to ' + mass);
    assert.equal(new Set(e.top_logprobs.map((t) => t.token)).size, 5, 'repeated alternatives');
  }
  // without logprobs: null; top_logprobs 0: the chosen token only
  const n = await client.chat.completions.create({ model, messages, max_tokens: 2, temperature: 0, ignore_eos: true });
  assert.equal(n.choices[0].logprobs, null);
  const z = await client.chat.completions.create({
    model, messages, max_tokens: 2, temperature: 0, ignore_eos: true, logprobs: true, top_logprobs: 0 });
  assert.deepEqual(z.choices[0].logprobs.content.map((e) => e.top_logprobs.length), [0, 0]);
  // streamed: each content chunk carries its token's logprobs, equal to the non-stream ones
  const s = await client.chat.completions.create({
    model, messages, max_tokens: 6, temperature: 0, ignore_eos: true, logprobs: true, top_logprobs: 5, stream: true });
  const streamed = [];
  for await (const chunk of s) for (const c of chunk.choices) if (c.logprobs) streamed.push(...c.logprobs.content);
  assert.deepEqual(streamed.map((e) => [e.token, e.logprob]), content.map((e) => [e.token, e.logprob]));
});

// logit_bias: +100 forces a token (greedy and sampled, streamed or not), -100
// bans the greedy choice; the ids come from the server's own /tokenize.
async function tokenIds(text) {
  const r = await fetch(baseURL.replace(/\/v1$/, '') + '/tokenize', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({ model, prompt: text, add_special_tokens: false }),
  });
  assert.equal(r.status, 200);
  return (await r.json()).tokens;
}

await check('logit_bias forces and bans tokens', async () => {
  const [world] = await tokenIds(' world');
  const creq = { model, prompt: 'Hello', max_tokens: 3, temperature: 0 };
  const forced = await client.completions.create({ ...creq, logit_bias: { [world]: 100 } });
  assert.equal(forced.choices[0].text, ' world world world');
  const sampled = await client.completions.create({ ...creq, temperature: 1, seed: 9, logit_bias: { [world]: 100 } });
  assert.equal(sampled.choices[0].text, ' world world world');
  let streamed = '';
  const s = await client.chat.completions.create({ model, messages, max_tokens: 2, temperature: 0, stream: true,
                                                   logit_bias: { [world]: 100 } });
  for await (const c of s) streamed += c.choices[0]?.delta?.content ?? '';
  assert.equal(streamed, ' world world');
  const plain = await client.completions.create({ ...creq, max_tokens: 1 });
  const first = await tokenIds(plain.choices[0].text);
  assert.equal(first.length, 1, `greedy token ${JSON.stringify(plain.choices[0].text)} re-tokenizes to ${first}`);
  const banned = await client.completions.create({ ...creq, max_tokens: 1, logit_bias: { [first[0]]: -100 } });
  assert.notEqual(banned.choices[0].text, plain.choices[0].text);
  await expectError(OpenAI.BadRequestError, 400, () =>
    client.completions.create({ ...creq, logit_bias: { 999999999: 1 } }), 'logit_bias');
});

// suffix: fill-in-the-middle; the oracle is the same request with the FIM
// layout spelled out as token ids (DeepSeek's PSM: BOS, fim_begin, prefix,
// fim_hole, suffix, fim_end), which must give the same greedy text.
await check('suffix: fill-in-the-middle', async () => {
  const prefix = 'def add(a, b):\n    return', suffix = '\n\nprint(add(1, 2))\n';
  const r = await client.completions.create({ model, prompt: prefix, suffix, max_tokens: 8, temperature: 0, ignore_eos: true });
  const [bos] = await tokenIds('<｜begin▁of▁sentence｜>');
  const [begin] = await tokenIds('<｜fim▁begin｜>');
  const [hole] = await tokenIds('<｜fim▁hole｜>');
  const [end] = await tokenIds('<｜fim▁end｜>');
  const ids = [bos, begin, ...(await tokenIds(prefix)), hole, ...(await tokenIds(suffix)), end];
  assert.equal(r.usage.prompt_tokens, ids.length);
  const o = await client.completions.create({ model, prompt: ids, max_tokens: 8, temperature: 0, ignore_eos: true });
  assert.equal(r.choices[0].text, o.choices[0].text);
  assert.ok(r.choices[0].text.length > 0);
  await expectError(OpenAI.BadRequestError, 400, () =>
    client.completions.create({ model, prompt: prefix, suffix, echo: true, max_tokens: 2 }), 'suffix');
});

// Chat prefix completion (DeepSeek's {"prefix": true} on the last message,
// vLLM's continue_final_message): the oracle is a completions request on the
// template's text spelled out up to the prefix, which must give the same
// greedy text; the reply holds only what the model adds.
await check('chat prefix completion', async () => {
  const pre = 'The sea is';
  const opts = { model, max_tokens: 8, temperature: 0, ignore_eos: true };
  const r = await client.chat.completions.create({ ...opts, messages: [...messages, { role: 'assistant', content: pre, prefix: true }] });
  const o = await client.completions.create({ ...opts, prompt: `<｜User｜>${messages[0].content}<｜Assistant｜>${pre}` });
  assert.equal(r.usage.prompt_tokens, o.usage.prompt_tokens);
  assert.equal(r.choices[0].message.content, o.choices[0].text);
  assert.ok(o.choices[0].text.length > 0);
  let streamed = '';
  const s = await client.chat.completions.create({ ...opts, stream: true, continue_final_message: true, add_generation_prompt: false,
                                                   messages: [...messages, { role: 'assistant', content: pre }] });
  for await (const c of s) streamed += c.choices[0]?.delta?.content ?? '';
  assert.equal(streamed, o.choices[0].text);
  await expectError(OpenAI.BadRequestError, 400, () =>
    client.chat.completions.create({ ...opts, messages: [{ role: 'assistant', content: 'a', prefix: true }, ...messages] }), 'messages');
});

// vLLM's stream_options.continuous_usage_stats: every chunk carries the
// choice's usage so far (role chunk 0, then one more per token), ending at
// the closing usage chunk's counts; without it the chunks carry null.
await check('stream_options.continuous_usage_stats', async () => {
  const req = { model, messages, max_tokens: 5, temperature: 0, ignore_eos: true, stream: true };
  const seen = [];
  let final = null;
  const s = await client.chat.completions.create({ ...req, stream_options: { include_usage: true, continuous_usage_stats: true } });
  for await (const c of s) if (c.choices.length) seen.push(c.usage); else final = c.usage;
  assert.ok(final && final.completion_tokens === 5, JSON.stringify(final));
  assert.equal(seen[0].completion_tokens, 0);
  assert.equal(seen[seen.length - 1].completion_tokens, 5);
  for (let k = 0; k < seen.length; k++) {
    assert.equal(seen[k].prompt_tokens, final.prompt_tokens);
    assert.equal(seen[k].total_tokens, seen[k].prompt_tokens + seen[k].completion_tokens);
    if (k) assert.ok(seen[k].completion_tokens >= seen[k - 1].completion_tokens);
  }
  assert.ok(seen.length >= 6);
  const plain = await client.chat.completions.create({ ...req, stream_options: { include_usage: true } });
  for await (const c of plain) if (c.choices.length) assert.equal(c.usage, null);
});

// best_of (legacy completions): the oracle is the same request with n =
// best_of and logprobs (the candidates get the same seeds): the answer is the
// candidate with the highest mean token logprob, and usage counts them all.
await check('best_of', async () => {
  const mean = (c) => c.logprobs.token_logprobs.reduce((a, b) => a + b, 0) / c.logprobs.token_logprobs.length;
  let req, all, ranked; /* a seed whose best candidate is not the first (else the check proves little) */
  for (let seed = 1; seed <= 30; seed++) {
    req = { model, prompt: 'Once upon a time', max_tokens: 6, temperature: 1, seed, ignore_eos: true };
    all = await client.completions.create({ ...req, n: 3, logprobs: 0 });
    ranked = [...all.choices].sort((a, b) => mean(b) - mean(a) || a.index - b.index);
    if (ranked[0].index !== 0 && ranked[1].index !== 1) break;
  }
  assert.ok(ranked[0].index !== 0 && ranked[1].index !== 1, 'no seed in 1..30 ranks a later candidate first');
  const best = await client.completions.create({ ...req, best_of: 3 });
  assert.equal(best.choices.length, 1);
  assert.equal(best.choices[0].index, 0);
  assert.equal(best.choices[0].text, ranked[0].text);
  assert.equal(best.choices[0].logprobs, null);
  assert.equal(best.usage.completion_tokens, all.usage.completion_tokens);
  const two = await client.completions.create({ ...req, best_of: 3, n: 2, logprobs: 0 });
  assert.deepEqual(two.choices.map((c) => c.text), ranked.slice(0, 2).map((c) => c.text));
  assert.deepEqual(two.choices.map((c) => c.index), [0, 1]);
  await expectError(OpenAI.BadRequestError, 400, () =>
    client.completions.create({ ...req, best_of: 3, stream: true }), 'best_of');
  await expectError(OpenAI.BadRequestError, 400, () =>
    client.completions.create({ ...req, best_of: 2, n: 3 }), 'best_of');
});

// vLLM's prompt_logprobs: the oracle is the same prompt scored through
// echo + logprobs (max_tokens 0), which gives every prompt token's logprob
// and its most likely alternatives from the same engine rows.
await check('prompt_logprobs', async () => {
  const prompt = 'The sea is deep and';
  const r = await fetch(baseURL.replace(/\/v1$/, '') + '/tokenize', {
    method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({ model, prompt }),
  });
  const ids = (await r.json()).tokens;
  const echo = await client.completions.create({ model, prompt, max_tokens: 0, echo: true, logprobs: 2 });
  const lp = echo.choices[0].logprobs;
  const got = await client.completions.create({ model, prompt, max_tokens: 1, temperature: 0, prompt_logprobs: 2 });
  const pl = got.choices[0].prompt_logprobs;
  assert.equal(pl.length, ids.length);
  assert.equal(pl[0], null);
  for (let k = 1; k < ids.length; k++) {
    const mine = pl[k][String(ids[k])];
    assert.ok(mine, `entry ${k} lacks the prompt token ${ids[k]}`);
    assert.equal(mine.logprob, lp.token_logprobs[k]);
    assert.equal(mine.decoded_token, lp.tokens[k]);
    assert.ok(Object.keys(pl[k]).length >= 2 && Object.keys(pl[k]).length <= 3, 'the token and 2 alternatives');
    const byRank = Object.values(pl[k]).sort((a, b) => a.rank - b.rank);
    const best = Math.max(...Object.values(lp.top_logprobs[k]));
    assert.equal(byRank[0].rank, 1);
    assert.equal(byRank[0].logprob, best, `rank 1 at ${k} is the most likely token`);
    assert.equal(mine.rank === 1, mine.logprob === best, `rank of the prompt token at ${k}`);
    assert.ok(mine.rank >= 1);
  }
  const chat = await client.chat.completions.create({ model, messages, max_tokens: 1, prompt_logprobs: 0 });
  assert.equal(chat.prompt_logprobs.length, chat.usage.prompt_tokens);
  assert.equal(chat.prompt_logprobs.filter((e) => e && Object.keys(e).length !== 1).length, 0, 'prompt_logprobs 0: the token alone');
  const score = await client.completions.create({ model, prompt, max_tokens: 0, prompt_logprobs: 1 });
  assert.equal(score.choices[0].text, '');
  assert.equal(score.usage.completion_tokens, 0);
  for (let k = 1; k < ids.length; k++)
    assert.equal(score.choices[0].prompt_logprobs[k][String(ids[k])].logprob, pl[k][String(ids[k])].logprob);
  await expectError(OpenAI.BadRequestError, 400, () =>
    client.completions.create({ model, prompt, max_tokens: 1, prompt_logprobs: 1, stream: true }), 'prompt_logprobs');
});

// vLLM's guided_choice / guided_json / structured_outputs (extra body fields
// through the SDK): sampled outputs are exactly one of the choices, or JSON
// the schema accepts; the model alone would write neither.
await check('guided_choice and guided_json', async () => {
  const choices = ['red', 'green', 'blue sky'];
  const seen = new Set();
  for (let seed = 0; seed < 6; seed++) {
    const r = await client.completions.create({ model, prompt: 'Colour:', max_tokens: 8, temperature: 1, seed, guided_choice: choices });
    assert.ok(choices.includes(r.choices[0].text), JSON.stringify(r.choices[0].text));
    assert.equal(r.choices[0].finish_reason, 'stop');
    seen.add(r.choices[0].text);
  }
  assert.ok(seen.size > 1, 'the sampled choices vary');
  const plain = await client.completions.create({ model, prompt: 'Colour:', max_tokens: 8, temperature: 0 });
  assert.ok(!choices.includes(plain.choices[0].text), 'unconstrained output is not a choice by chance');
  const c = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 1, seed: 3,
                                                   structured_outputs: { choice: choices } });
  assert.ok(choices.includes(c.choices[0].message.content), c.choices[0].message.content);
  const schema = { type: 'object', properties: { n: { type: 'integer' }, ok: { type: 'boolean' } }, required: ['n', 'ok'] };
  const j = await client.chat.completions.create({ model, messages, max_tokens: 60, temperature: 1, seed: 4, guided_json: schema });
  const v = JSON.parse(j.choices[0].message.content);
  assert.ok(Number.isInteger(v.n) && typeof v.ok === 'boolean', j.choices[0].message.content);
  await expectError(OpenAI.BadRequestError, 400, () =>
    client.completions.create({ model, prompt: 'x', max_tokens: 4, guided_choice: ['a', 'a'] }), 'guided_choice');
});

// vLLM's stopping extensions through the SDK (extra body fields), against the
// plain greedy run
await check('stop_token_ids, min_tokens, include_stop_str_in_output', async () => {
  const creq = { model, prompt: 'Hello', max_tokens: 8, temperature: 0, ignore_eos: true, logprobs: 0 };
  const full = await client.completions.create(creq);
  const toks = full.choices[0].logprobs.tokens;
  const ids = await tokenIds(toks[2]);
  assert.equal(ids.length, 1, `token ${JSON.stringify(toks[2])} re-tokenizes to ${ids}`);
  const first = toks.indexOf(toks[2]);
  const r = await client.completions.create({ ...creq, stop_token_ids: ids });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.choices[0].text, toks.slice(0, first + 1).join(''));
  const m = await client.completions.create({ ...creq, stop_token_ids: ids, min_tokens: first + 2 });
  assert.deepEqual(m.choices[0].logprobs.tokens.slice(0, first), toks.slice(0, first));
  assert.ok(m.usage.completion_tokens >= first + 2);
  const stop = toks[3];
  const k = toks.indexOf(stop);
  const inc = await client.completions.create({ ...creq, stop: [stop], include_stop_str_in_output: true });
  assert.equal(inc.choices[0].text, toks.slice(0, k + 1).join(''));
  await expectError(OpenAI.BadRequestError, 400, () =>
    client.completions.create({ ...creq, min_tokens: 9 }), 'min_tokens');
});

await check('stop', async () => {
  const chars = Array.from(greedy);
  const k = Math.floor(chars.length / 2);
  const stop = chars.slice(k, k + 2).join('');
  const want = greedy.slice(0, greedy.indexOf(stop));
  const r = await client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 0, ignore_eos: true, stop: [stop] });
  assert.equal(r.choices[0].message.content, want);
  assert.equal(r.choices[0].finish_reason, 'stop');
});

await check('errors', async () => {
  await expectError(OpenAI.NotFoundError, 404, () =>
    client.chat.completions.create({ model: 'no-such-model', messages, max_tokens: 2 }), 'model');
  await expectError(OpenAI.BadRequestError, 400, () =>
    client.chat.completions.create({ model, messages, max_tokens: 2, temperature: 7 }), 'temperature');
  await expectError(OpenAI.BadRequestError, 400, () =>
    client.completions.create({ model, prompt: 'x', max_tokens: 1 << 30 }), 'max_tokens');
  const wrong = new OpenAI({ baseURL, apiKey: 'wrong-key', maxRetries: 0, timeout: 30_000 });
  await expectError(OpenAI.AuthenticationError, 401, () => wrong.models.list());
});

if (failures.length) {
  for (const f of failures) console.error('FAIL: openai_sdk ' + f);
  process.exit(1);
}
console.log(`openai_sdk: ${passed} checks passed`);
