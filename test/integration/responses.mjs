// test/integration/responses.mjs — OpenAI's Responses API (POST /v1/responses)
// through the official `openai` npm client against `mlaserve serve` on the
// random-weight tiny-v3 model (started by test/cli/responses.sh).
//
// References: /v1/chat/completions on the same server with the same greedy
// request decides what the text, reasoning and token counts must be (a
// Response is the chat answer in other clothes); the SDK's own stream
// accumulator (client.responses.stream) and OpenAI's documented event and
// object shapes decide the rest; JSON.parse decides structured outputs and
// tool arguments (their validity is the constraint's doing: the weights are
// random).
// Env: MLASERVE_BASE_URL, MLASERVE_MODEL_NAME, MLASERVE_MODE (v3: a server
// storing responses | r1: --chat-template deepseek-r1 --responses-store 0).
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { check, finish } from './checks.mjs';

const baseURL = process.env.MLASERVE_BASE_URL;
const model = process.env.MLASERVE_MODEL_NAME;
const mode = process.env.MLASERVE_MODE || 'v3';
const client = new OpenAI({ baseURL, apiKey: 'none', maxRetries: 0, timeout: 300_000 });

// The chat answer a Responses request must reproduce.
async function chat(messages, extra = {}) {
  const c = await client.chat.completions.create({ model, messages, temperature: 0, ...extra });
  return { msg: c.choices[0].message, finish: c.choices[0].finish_reason, usage: c.usage };
}

function texts(r) {
  const out = { reasoning: '', text: '', calls: [] };
  for (const item of r.output) {
    if (item.type === 'reasoning') out.reasoning += item.content.map((c) => c.text).join('');
    if (item.type === 'message') out.text += item.content.map((c) => c.text).join('');
    if (item.type === 'function_call') out.calls.push(item);
  }
  return out;
}

function checkEnvelope(r, status) {
  assert.match(r.id, /^resp_[0-9a-f]{24}$/);
  assert.equal(r.object, 'response');
  assert.equal(typeof r.created_at, 'number');
  assert.equal(r.model, model);
  assert.equal(r.store, mode === 'v3', 'stored by default; the R1 server runs with --responses-store 0');
  assert.equal(r.error, null);
  if (status) assert.equal(r.status, status);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
  for (const item of r.output) assert.ok(item.id && item.id.includes(r.id.slice(5)), `item id ${item.id}`);
}

function statusFor(finish) {
  return finish === 'length' ? 'incomplete' : 'completed';
}

// Every event of a raw stream (stream: true), checked for order and numbering.
async function streamEvents(params) {
  const events = [];
  for await (const e of await client.responses.create({ ...params, stream: true })) events.push(e);
  events.forEach((e, i) => assert.equal(e.sequence_number, i, `sequence_number of ${e.type}`));
  assert.equal(events[0].type, 'response.created');
  assert.equal(events[1].type, 'response.in_progress');
  const last = events[events.length - 1];
  assert.ok(['response.completed', 'response.incomplete'].includes(last.type), last.type);
  assert.equal(events.filter((e) => e.type.startsWith('response.') && e.response).length, 3, 'created, in_progress, end');
  return { events, final: last.response };
}

const story = [{ role: 'user', content: 'Tell me a story about a lighthouse.' }];

if (mode === 'v3') {
  await check('text equals chat (string input)', async () => {
    const r = await client.responses.create({ model, input: story[0].content, max_output_tokens: 24, temperature: 0 });
    const c = await chat(story, { max_completion_tokens: 24 });
    checkEnvelope(r, statusFor(c.finish));
    assert.equal(r.output_text, c.msg.content);
    assert.equal(r.output.length, 1);
    assert.equal(r.output[0].type, 'message');
    assert.equal(r.output[0].role, 'assistant');
    assert.equal(r.output[0].content[0].type, 'output_text');
    assert.deepEqual(r.output[0].content[0].annotations, []);
    assert.equal(r.usage.input_tokens, c.usage.prompt_tokens);
    assert.equal(r.usage.output_tokens, c.usage.completion_tokens);
    assert.equal(r.max_output_tokens, 24);
    if (r.status === 'incomplete') assert.equal(r.incomplete_details.reason, 'max_output_tokens');
  });

  await check('instructions, developer and assistant history equal chat', async () => {
    const input = [
      { role: 'developer', content: 'Answer briefly.' },
      { role: 'user', content: [{ type: 'input_text', text: 'Name a ' }, { type: 'input_text', text: 'colour.' }] },
      { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'Blue.' }] },
      { role: 'user', content: 'Another one?' },
    ];
    const r = await client.responses.create({ model, instructions: 'You are terse.', input, max_output_tokens: 20, temperature: 0, metadata: { run: 'x1' } });
    const c = await chat([
      { role: 'system', content: 'You are terse.' },
      { role: 'system', content: 'Answer briefly.' },
      { role: 'user', content: 'Name a colour.' },
      { role: 'assistant', content: 'Blue.' },
      { role: 'user', content: 'Another one?' },
    ], { max_completion_tokens: 20 });
    checkEnvelope(r, statusFor(c.finish));
    assert.equal(r.output_text, c.msg.content);
    assert.equal(r.usage.input_tokens, c.usage.prompt_tokens);
    assert.equal(r.instructions, 'You are terse.');
    assert.deepEqual(r.metadata, { run: 'x1' });
  });

  await check('streaming events equal the non-streaming response', async () => {
    const params = { model, input: story, max_output_tokens: 24, temperature: 0 };
    const whole = await client.responses.create(params);
    const { events, final } = await streamEvents(params);
    const deltas = events.filter((e) => e.type === 'response.output_text.delta');
    assert.ok(deltas.length > 1, 'one delta per token, not one at the end');
    assert.equal(deltas.map((e) => e.delta).join(''), whole.output_text);
    const types = events.map((e) => e.type);
    const expect = ['response.output_item.added', 'response.content_part.added'];
    assert.deepEqual(types.slice(2, 4), expect);
    assert.deepEqual(types.slice(-4, -1), ['response.output_text.done', 'response.content_part.done', 'response.output_item.done']);
    assert.equal(events.find((e) => e.type === 'response.output_text.done').text, whole.output_text);
    assert.equal(final.status, whole.status);
    assert.deepEqual(texts(final), texts(whole));
    assert.deepEqual(final.usage, whole.usage);
    assert.equal(events[0].response.status, 'in_progress');
    assert.deepEqual(events[0].response.output, []);
  });

  await check('the SDK stream helper accumulates the same response', async () => {
    const params = { model, input: story, max_output_tokens: 24, temperature: 0 };
    const whole = await client.responses.create(params);
    const s = client.responses.stream(params);
    let snapshot = '';
    s.on('response.output_text.delta', (e) => { snapshot = e.snapshot; });
    const final = await s.finalResponse();
    assert.equal(final.output_text, whole.output_text);
    assert.equal(snapshot, whole.output_text);
    assert.deepEqual(texts(final), texts(whole));
  });

  const weather = {
    type: 'function', name: 'get_weather', description: 'Weather for a city',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 24 }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'], additionalProperties: false },
  };
  const checkCall = (item) => {
    assert.equal(item.type, 'function_call');
    assert.equal(item.name, 'get_weather');
    assert.match(item.call_id, /^call_[0-9a-f]{24}$/);
    assert.equal(item.status, 'completed');
    const args = JSON.parse(item.arguments);
    assert.equal(typeof args.city, 'string');
    assert.ok(['celsius', 'fahrenheit'].includes(args.unit));
  };
  let firstCall = null;

  await check('forced function call (tools, tool_choice)', async () => {
    const r = await client.responses.create({ model, input: 'Weather in Paris?', tools: [weather], tool_choice: { type: 'function', name: 'get_weather' }, parallel_tool_calls: false, max_output_tokens: 200, seed: 1 });
    checkEnvelope(r, 'completed');
    const calls = r.output.filter((i) => i.type === 'function_call');
    assert.equal(calls.length, 1);
    checkCall(calls[0]);
    firstCall = calls[0];
    assert.equal(r.tools[0].name, 'get_weather', 'tools are echoed as sent');
    assert.deepEqual(r.tool_choice, { type: 'function', name: 'get_weather' });
    assert.equal(r.parallel_tool_calls, false);
  });

  await check('forced function call, streaming', async () => {
    const { events, final } = await streamEvents({ model, input: 'Weather in Paris?', tools: [weather], tool_choice: 'required', parallel_tool_calls: false, max_output_tokens: 200, seed: 2 });
    const done = events.filter((e) => e.type === 'response.function_call_arguments.done');
    assert.equal(done.length, 1);
    const args = events.filter((e) => e.type === 'response.function_call_arguments.delta').map((e) => e.delta).join('');
    assert.equal(args, done[0].arguments);
    const item = final.output.find((i) => i.type === 'function_call');
    checkCall(item);
    assert.equal(item.arguments, done[0].arguments);
    const added = events.find((e) => e.type === 'response.output_item.added' && e.item.type === 'function_call');
    assert.equal(added.item.id, item.id);
    assert.equal(added.item.arguments, '');
    const s = await client.responses.stream({ model, input: 'Weather in Paris?', tools: [weather], tool_choice: 'required', parallel_tool_calls: false, max_output_tokens: 200, seed: 2 }).finalResponse();
    assert.equal(s.output.find((i) => i.type === 'function_call').arguments, item.arguments);
  });

  await check('function_call / function_call_output history equals chat tool messages', async () => {
    assert.ok(firstCall, 'needs the forced call above');
    const r = await client.responses.create({
      model, temperature: 0, max_output_tokens: 16, tools: [weather],
      input: [
        { role: 'user', content: 'Weather in Paris?' },
        { type: 'function_call', call_id: firstCall.call_id, name: firstCall.name, arguments: firstCall.arguments },
        { type: 'function_call_output', call_id: firstCall.call_id, output: '{"temperature": 21}' },
      ],
    });
    const c = await chat([
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ id: firstCall.call_id, type: 'function', function: { name: firstCall.name, arguments: firstCall.arguments } }] },
      { role: 'tool', tool_call_id: firstCall.call_id, content: '{"temperature": 21}' },
    ], { max_completion_tokens: 16, tools: [{ type: 'function', function: { name: weather.name, description: weather.description, parameters: weather.parameters } }] });
    assert.equal(r.usage.input_tokens, c.usage.prompt_tokens);
    assert.deepEqual(texts(r).text, c.msg.content ?? '');
    assert.equal(texts(r).calls.length, (c.msg.tool_calls || []).length);
  });

  await check('text.format json_schema and json_object', async () => {
    const schema = { type: 'object', properties: { name: { type: 'string', maxLength: 20 }, population: { type: 'integer' } }, required: ['name', 'population'], additionalProperties: false };
    for (const stream of [false, true]) {
      const params = { model, input: 'A city as JSON.', max_output_tokens: 200, seed: 3, text: { format: { type: 'json_schema', name: 'city', schema, strict: true } } };
      const r = stream ? await client.responses.stream(params).finalResponse() : await client.responses.create(params);
      assert.equal(r.status, 'completed');
      const v = JSON.parse(r.output_text);
      assert.equal(typeof v.name, 'string');
      assert.ok(Number.isInteger(v.population));
      assert.deepEqual(Object.keys(v).sort(), ['name', 'population']);
      assert.equal(r.text.format.type, 'json_schema');
    }
    const o = await client.responses.create({ model, input: 'JSON please.', max_output_tokens: 200, seed: 4, text: { format: { type: 'json_object' } } });
    assert.equal(typeof JSON.parse(o.output_text), 'object');
  });

  await check('seed reproducibility (sampling extensions pass through)', async () => {
    const params = { model, input: story, max_output_tokens: 12, temperature: 1, top_k: 50, seed: 7 };
    const a = await client.responses.create(params);
    const b = await client.responses.create(params);
    assert.equal(a.output_text, b.output_text);
  });

  await check('previous_response_id continues the stored conversation (as chat with the whole history)', async () => {
    const first = await client.responses.create({ model, instructions: 'Be terse.', input: 'Name a river.', max_output_tokens: 12, temperature: 0 });
    assert.equal(first.store, true, 'stored by default');
    for (const stream of [false, true]) {
      const params = { model, previous_response_id: first.id, input: 'And a mountain?', max_output_tokens: 12, temperature: 0 };
      const second = stream ? await client.responses.stream(params).finalResponse() : await client.responses.create(params);
      assert.equal(second.previous_response_id, first.id);
      // instructions are not carried over (OpenAI's rule)
      const c = await chat([
        { role: 'user', content: 'Name a river.' },
        { role: 'assistant', content: first.output_text },
        { role: 'user', content: 'And a mountain?' },
      ], { max_completion_tokens: 12 });
      assert.equal(second.output_text, c.msg.content);
      assert.equal(second.usage.input_tokens, c.usage.prompt_tokens);
    }
  });

  await check('retrieve, input_items and delete a stored response', async () => {
    const r = await client.responses.create({ model, input: [{ role: 'user', content: 'one' }, { role: 'assistant', content: 'two' }, { role: 'user', content: 'three' }], max_output_tokens: 6, temperature: 0 });
    const got = await client.responses.retrieve(r.id);
    assert.deepEqual(got, r);
    const asc = [];
    for await (const item of client.responses.inputItems.list(r.id, { order: 'asc', limit: 2 })) asc.push(item);
    assert.deepEqual(asc.map((i) => i.content), ['one', 'two', 'three'], 'every item, paged by 2 (after=)');
    assert.ok(asc.every((i) => typeof i.id === 'string'));
    const desc = await client.responses.inputItems.list(r.id);
    assert.deepEqual(desc.data.map((i) => i.content), ['three', 'two', 'one'], 'newest first by default');
    await client.responses.delete(r.id);
    await assert.rejects(client.responses.retrieve(r.id), OpenAI.NotFoundError);
    await assert.rejects(client.responses.create({ model, previous_response_id: r.id, input: 'x', max_output_tokens: 2 }), OpenAI.NotFoundError);
    const unstored = await client.responses.create({ model, input: 'x', max_output_tokens: 2, store: false });
    assert.equal(unstored.store, false);
    await assert.rejects(client.responses.retrieve(unstored.id), OpenAI.NotFoundError);
  });

  await check('a stored function call continues with function_call_output only', async () => {
    const first = await client.responses.create({ model, input: 'Weather in Paris?', tools: [weather], tool_choice: 'required', parallel_tool_calls: false, max_output_tokens: 200, seed: 5 });
    const call = first.output.find((i) => i.type === 'function_call');
    checkCall(call);
    const r = await client.responses.create({ model, previous_response_id: first.id, tools: [weather], temperature: 0, max_output_tokens: 12,
      input: [{ type: 'function_call_output', call_id: call.call_id, output: 'sunny' }] });
    const c = await chat([
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ id: call.call_id, type: 'function', function: { name: call.name, arguments: call.arguments } }] },
      { role: 'tool', tool_call_id: call.call_id, content: 'sunny' },
    ], { max_completion_tokens: 12, tools: [{ type: 'function', function: { name: weather.name, description: weather.description, parameters: weather.parameters } }] });
    assert.equal(r.usage.input_tokens, c.usage.prompt_tokens);
    assert.equal(texts(r).text, c.msg.content ?? '');
  });

  await check('logprobs (include message.output_text.logprobs, top_logprobs) equal chat logprobs, streaming too', async () => {
    const params = { model, input: story, max_output_tokens: 12, temperature: 0, include: ['message.output_text.logprobs'], top_logprobs: 2 };
    const r = await client.responses.create(params);
    const c = await client.chat.completions.create({ model, messages: story, max_completion_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 2 });
    const want = c.choices[0].logprobs.content;
    const got = r.output[0].content[0].logprobs;
    assert.equal(got.length, want.length, 'one entry per token');
    got.forEach((e, i) => {
      assert.equal(e.token, want[i].token);
      assert.ok(Math.abs(e.logprob - want[i].logprob) < 1e-6);
      assert.deepEqual(e.bytes, want[i].bytes);
      assert.deepEqual(e.top_logprobs.map((t) => t.token), want[i].top_logprobs.map((t) => t.token));
    });
    assert.equal(Buffer.from(got.flatMap((e) => e.bytes)).toString('utf8'), r.output_text, "the entries' bytes spell the text");
    assert.equal(r.top_logprobs, 2);
    const { events } = await streamEvents(params);
    const streamed = events.filter((e) => e.type === 'response.output_text.delta').flatMap((e) => e.logprobs);
    assert.deepEqual(streamed, got);
    assert.deepEqual(events.find((e) => e.type === 'response.output_text.done').logprobs, got);
    const plain = await client.responses.create({ model, input: story, max_output_tokens: 4 });
    assert.deepEqual(plain.output[0].content[0].logprobs, [], 'not asked: empty');
  });

  // Polls a background response until it leaves queued / in_progress.
  const settle = async (id) => {
    for (let t0 = Date.now(); Date.now() - t0 < 120_000;) {
      const r = await client.responses.retrieve(id);
      if (!['queued', 'in_progress'].includes(r.status)) return r;
      await new Promise((res) => setTimeout(res, 20));
    }
    throw new Error(`${id} still running after 120 s`);
  };

  await check('background: answered queued, polled to the foreground answer', async () => {
    const params = { model, input: story, max_output_tokens: 24, temperature: 0, metadata: { job: 'bg' } };
    const fg = await client.responses.create(params);
    const q = await client.responses.create({ ...params, background: true });
    assert.equal(q.status, 'queued');
    assert.equal(q.background, true);
    assert.deepEqual(q.output, []);
    assert.equal(q.usage, null);
    assert.deepEqual(q.metadata, { job: 'bg' });
    const done = await settle(q.id);
    assert.equal(done.id, q.id);
    assert.equal(done.background, true);
    assert.equal(done.status, fg.status);
    assert.equal(done.output_text, fg.output_text, 'greedy: the same text as the foreground request');
    assert.equal(done.usage.input_tokens, fg.usage.input_tokens);
    assert.equal(done.usage.output_tokens, fg.usage.output_tokens);
    const items = await client.responses.inputItems.list(q.id);
    assert.equal(items.data.length, 1);
    // it ended with an answer: a follow-up continues from it, as from a foreground one
    const next = { model, input: 'And then?', max_output_tokens: 8, temperature: 0 };
    const a = await client.responses.create({ ...next, previous_response_id: q.id });
    const b = await client.responses.create({ ...next, previous_response_id: fg.id });
    assert.equal(a.output_text, b.output_text);
    assert.equal(a.usage.input_tokens, b.usage.input_tokens);
  });

  await check('background: cancel stops it, delete forgets a running one', async () => {
    const long = { model, input: story, max_output_tokens: 3000, ignore_eos: true, background: true };
    const q = await client.responses.create(long);
    const c = await client.responses.cancel(q.id);
    assert.equal(c.id, q.id);
    assert.equal(c.status, 'cancelled');
    assert.ok(c.usage.output_tokens < 3000, `${c.usage.output_tokens} tokens`);
    const bare = ({ output_text, ...r }) => r; // the SDK adds output_text to create / retrieve answers only
    assert.deepEqual(bare(await client.responses.retrieve(q.id)), bare(c), 'stored as cancelled');
    assert.deepEqual(await client.responses.cancel(q.id), c, 'cancelling again answers it as it is');
    await assert.rejects(client.responses.create({ model, input: 'x', max_output_tokens: 2, previous_response_id: q.id }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === 'previous_response_id');
    const fg = await client.responses.create({ model, input: 'x', max_output_tokens: 2 });
    await assert.rejects(client.responses.cancel(fg.id), OpenAI.BadRequestError, 'only background responses are cancelled');
    await assert.rejects(client.responses.cancel('resp_0123456789abcdef01234567'), OpenAI.NotFoundError);
    const d = await client.responses.create(long);
    await client.responses.delete(d.id);
    await assert.rejects(client.responses.retrieve(d.id), OpenAI.NotFoundError);
    await new Promise((res) => setTimeout(res, 500)); // its runner has seen the cancel by now, and stored nothing
    await assert.rejects(client.responses.retrieve(d.id), OpenAI.NotFoundError);
    await assert.rejects(client.responses.create({ ...long, stream: true }), (e) => e instanceof OpenAI.BadRequestError && e.param === 'background');
    await assert.rejects(client.responses.create({ ...long, store: false }), (e) => e instanceof OpenAI.BadRequestError && e.param === 'store');
  });

  const bad = async (params, Err, param) => {
    await assert.rejects(client.responses.create({ model, input: 'hi', ...params }), (e) => {
      assert.ok(e instanceof Err, `${e.constructor.name}: ${e.message}`);
      if (param !== undefined) assert.equal(e.param, param, e.message);
      return true;
    });
  };
  await check('typed errors name the Responses parameter', async () => {
    await bad({ previous_response_id: 'resp_0123456789abcdef01234567' }, OpenAI.NotFoundError, 'previous_response_id');
    await bad({ input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'http://x/y.png' }] }] }, OpenAI.BadRequestError, 'input');
    await bad({ input: [{ type: 'item_reference', id: 'msg_1' }] }, OpenAI.BadRequestError, 'input');
    await bad({ input: [] }, OpenAI.BadRequestError, 'input');
    await bad({ tools: [{ type: 'web_search' }] }, OpenAI.BadRequestError, 'tools');
    await bad({ max_output_tokens: -1 }, OpenAI.BadRequestError, 'max_output_tokens');
    await bad({ truncation: 'auto' }, OpenAI.BadRequestError, 'truncation');
    await bad({ include: ['file_search_call.results'] }, OpenAI.BadRequestError, 'include');
    await bad({ top_logprobs: 21 }, OpenAI.BadRequestError, 'top_logprobs');
    await bad({ text: { format: { type: 'json_schema', name: 'x' } } }, OpenAI.BadRequestError, 'text.format.schema');
    await bad({ tool_choice: { type: 'function', name: 'nope' }, tools: [weather] }, OpenAI.BadRequestError, 'tool_choice');
    await bad({ model: 'no-such-model' }, OpenAI.NotFoundError, 'model');
    // the server keeps serving
    const r = await client.responses.create({ model, input: 'still there?', max_output_tokens: 4 });
    assert.equal(r.object, 'response');
  });
}

if (mode === 'r1') {
  await check('background is refused where nothing is stored', async () => {
    await assert.rejects(client.responses.create({ model, input: 'hi', max_output_tokens: 2, background: true }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === 'background');
  });

  await check('reasoning item equals chat reasoning_content', async () => {
    const r = await client.responses.create({ model, input: story, max_output_tokens: 40, temperature: 0 });
    const c = await chat(story, { max_completion_tokens: 40 });
    checkEnvelope(r, statusFor(c.finish));
    const t = texts(r);
    assert.ok(c.msg.reasoning_content, 'the R1 template opens <think>: there is reasoning');
    assert.equal(t.reasoning, c.msg.reasoning_content);
    assert.equal(t.text, c.msg.content ?? '');
    assert.equal(r.output[0].type, 'reasoning');
    assert.equal(r.output[0].content[0].type, 'reasoning_text');
    assert.deepEqual(r.output[0].summary, []);
    assert.equal(r.usage.output_tokens_details.reasoning_tokens, c.usage.completion_tokens_details.reasoning_tokens);
    assert.ok(r.usage.output_tokens_details.reasoning_tokens > 0);
  });

  await check('reasoning streams as reasoning_text deltas', async () => {
    const params = { model, input: story, max_output_tokens: 40, temperature: 0 };
    const whole = await client.responses.create(params);
    const { events, final } = await streamEvents(params);
    const deltas = events.filter((e) => e.type === 'response.reasoning_text.delta');
    assert.ok(deltas.length > 1);
    assert.equal(deltas.map((e) => e.delta).join(''), texts(whole).reasoning);
    assert.equal(events[2].type, 'response.output_item.added');
    assert.equal(events[2].item.type, 'reasoning');
    assert.deepEqual(texts(final), texts(whole));
    assert.deepEqual(final.output.map((i) => [i.type, i.status]), whole.output.map((i) => [i.type, i.status]));
    const acc = await client.responses.stream(params).finalResponse();
    assert.deepEqual(texts(acc), texts(whole));
  });

  await check('logprobs cover the message text only (not the reasoning)', async () => {
    // a JSON format makes the model close </think> within the budget, so there is a message
    const r = await client.responses.create({ model, input: story, max_output_tokens: 80, temperature: 0, include: ['message.output_text.logprobs'], text: { format: { type: 'json_object' } } });
    assert.equal(r.output[0].type, 'reasoning');
    const msg = r.output.find((i) => i.type === 'message');
    assert.ok(msg, JSON.stringify(r.output));
    const lps = msg.content[0].logprobs;
    // the entries' bytes spell the message text, but for whitespace the parser trims after </think>
    // (a token holding it keeps its whole bytes)
    const spelled = Buffer.from(lps.flatMap((e) => e.bytes)).toString('utf8'), text = msg.content[0].text;
    assert.ok(spelled.endsWith(text) && spelled.slice(0, spelled.length - text.length).trim() === '', `${JSON.stringify(spelled)} vs ${JSON.stringify(text)}`);
    assert.ok(lps.length <= r.usage.output_tokens - r.usage.output_tokens_details.reasoning_tokens);
  });

  await check('include_reasoning false drops the reasoning item', async () => {
    const r = await client.responses.create({ model, input: story, max_output_tokens: 40, temperature: 0, include_reasoning: false });
    assert.ok(r.output.every((i) => i.type !== 'reasoning'));
    assert.ok(r.output.length >= 1);
  });
}

finish(`responses (${mode})`);
