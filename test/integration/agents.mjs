// test/integration/agents.mjs — structured outputs, forced tool calls and R1
// reasoning through the official `openai` npm client against `mlaserve serve`
// on the random-weight tiny-v3 model (started by test/cli/agents.sh).
//
// References: JSON.parse and the validator below (a JSON Schema subset written
// from the spec: type, properties, required, additionalProperties, enum,
// const, items, minItems, maxItems, minLength, maxLength, anyOf) decide
// validity — never the server's own validator; OpenAI's documented response
// shapes decide the rest. The model's weights are random, so every valid
// output here is the constraint's doing.
// Env: MLASERVE_BASE_URL, MLASERVE_MODEL_NAME, MLASERVE_MODE (v3 | r1 | v31),
// MLASERVE_STRUCTURED (structured-output requests, default 50: every schema).
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { check, finish } from './checks.mjs';

const baseURL = process.env.MLASERVE_BASE_URL;
const model = process.env.MLASERVE_MODEL_NAME;
const mode = process.env.MLASERVE_MODE || 'v3';
const n_structured = Number(process.env.MLASERVE_STRUCTURED || 50);
const client = new OpenAI({ baseURL, apiKey: 'none', maxRetries: 0, timeout: 300_000 });

// ---- a small JSON Schema validator (the subset the server supports)
function typeOf(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}
function typeMatches(t, v) {
  const a = typeOf(v);
  return t === a || (t === 'number' && a === 'integer');
}
// JSON Schema formats, checked here by JavaScript (the server compiles its own automata)
const FORMATS = {
  date: (x) => /^\d{4}-\d{2}-\d{2}$/.test(x) && +x.slice(5, 7) >= 1 && +x.slice(5, 7) <= 12 && +x.slice(8) >= 1 && +x.slice(8) <= 31,
  uuid: (x) => /^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$/i.test(x),
  ipv4: (x) => { const p = x.split('.'); return p.length === 4 && p.every((q) => /^(0|[1-9]\d{0,2})$/.test(q) && +q <= 255); },
};

export function validate(s, v, path = '$', root = s) {
  if (s.$ref === '#') validate(root, v, path, root);
  else if (s.$ref !== undefined) {
    const m = /^#\/(\$defs|definitions)\/(.+)$/.exec(s.$ref);
    if (!m || !root[m[1]] || !root[m[1]][m[2]]) throw new Error(`${path}: cannot resolve ${s.$ref}`);
    validate(root[m[1]][m[2]], v, path, root);
  }
  for (const part of s.allOf || []) validate(part, v, path, root);
  if (s.anyOf) {
    if (!s.anyOf.some((alt) => { try { validate(alt, v, path, root); return true; } catch { return false; } }))
      throw new Error(`${path}: matches no anyOf alternative: ${JSON.stringify(v)}`);
  }
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? s.type : [s.type];
    if (!types.some((t) => typeMatches(t, v))) throw new Error(`${path}: ${JSON.stringify(v)} is not ${types}`);
  }
  if (s.enum && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v))) throw new Error(`${path}: ${JSON.stringify(v)} not in enum`);
  if ('const' in s && JSON.stringify(s.const) !== JSON.stringify(v)) throw new Error(`${path}: not the const`);
  if (typeOf(v) === 'string') {
    const n = [...v].length;
    if (s.minLength !== undefined && n < s.minLength) throw new Error(`${path}: shorter than ${s.minLength}`);
    if (s.maxLength !== undefined && n > s.maxLength) throw new Error(`${path}: longer than ${s.maxLength}`);
    if (s.pattern !== undefined && !new RegExp(s.pattern, 'u').test(v)) throw new Error(`${path}: ${JSON.stringify(v)} does not match ${s.pattern}`);
    if (s.format && FORMATS[s.format] && !FORMATS[s.format](v)) throw new Error(`${path}: ${JSON.stringify(v)} is not a ${s.format}`);
  }
  if (typeof v === 'number') {
    if (s.minimum !== undefined && v < s.minimum) throw new Error(`${path}: ${v} below minimum ${s.minimum}`);
    if (s.maximum !== undefined && v > s.maximum) throw new Error(`${path}: ${v} above maximum ${s.maximum}`);
    if (s.exclusiveMinimum !== undefined && v <= s.exclusiveMinimum) throw new Error(`${path}: ${v} not above ${s.exclusiveMinimum}`);
    if (s.exclusiveMaximum !== undefined && v >= s.exclusiveMaximum) throw new Error(`${path}: ${v} not below ${s.exclusiveMaximum}`);
    if (s.multipleOf !== undefined) {
      const q = v / s.multipleOf;
      if (Math.abs(q - Math.round(q)) > 1e-9 * Math.max(1, Math.abs(q))) throw new Error(`${path}: ${v} is not a multiple of ${s.multipleOf}`);
    }
  }
  if (typeOf(v) === 'array') {
    if (s.minItems !== undefined && v.length < s.minItems) throw new Error(`${path}: fewer than ${s.minItems} items`);
    if (s.maxItems !== undefined && v.length > s.maxItems) throw new Error(`${path}: more than ${s.maxItems} items`);
    const tuple = s.prefixItems || [];
    v.forEach((x, i) => {
      const is = i < tuple.length ? tuple[i] : s.items;
      if (is === false) throw new Error(`${path}: item ${i} not allowed`);
      if (is) validate(is, x, `${path}[${i}]`, root);
    });
  }
  if (typeOf(v) === 'object') {
    for (const r of s.required || []) if (!(r in v)) throw new Error(`${path}: missing required '${r}'`);
    const props = s.properties || {};
    for (const [k, x] of Object.entries(v)) {
      if (k in props) validate(props[k], x, `${path}.${k}`, root);
      else if (s.additionalProperties === false) throw new Error(`${path}: unexpected key '${k}'`);
      else if (typeof s.additionalProperties === 'object') validate(s.additionalProperties, x, `${path}.${k}`, root);
    }
  }
}

// ---- the schemas: nested objects, arrays, enums, numbers, escapes, optional keys, unions
const S = {
  person: { type: 'object', properties: { name: { type: 'string', maxLength: 20 }, age: { type: 'integer' } }, required: ['name', 'age'], additionalProperties: false },
  nested: { type: 'object', properties: { user: { type: 'object', properties: { id: { type: 'integer' }, tags: { type: 'array', items: { type: 'string', maxLength: 8 }, maxItems: 3 } }, required: ['id', 'tags'] } }, required: ['user'] },
  enums: { type: 'object', properties: { color: { enum: ['red', 'green', 'blue'] }, size: { type: 'string', enum: ['S', 'M', 'L', 'XL'] }, ok: { type: 'boolean' } }, required: ['color', 'size', 'ok'] },
  numbers: { type: 'object', properties: { x: { type: 'number' }, y: { type: 'number' }, n: { type: 'integer' } }, required: ['x', 'y', 'n'] },
  list: { type: 'array', items: { type: 'object', properties: { k: { type: 'string', maxLength: 6 }, v: { type: 'integer' } }, required: ['k', 'v'] }, minItems: 1, maxItems: 3 },
  escapes: { type: 'object', properties: { text: { type: 'string', minLength: 1, maxLength: 30 }, path: { type: 'string', maxLength: 20 } }, required: ['text', 'path'] },
  optional: { type: 'object', properties: { a: { type: 'string', maxLength: 5 }, b: { type: 'integer' }, c: { type: 'boolean' } }, required: ['c'] },
  union: { type: 'object', properties: { v: { anyOf: [{ type: 'string', maxLength: 10 }, { type: 'null' }] }, w: { type: ['integer', 'null'] } }, required: ['v', 'w'] },
  matrix: { type: 'object', properties: { rows: { type: 'array', items: { type: 'array', items: { type: 'integer' }, maxItems: 3 }, maxItems: 3 } }, required: ['rows'] },
  constant: { type: 'object', properties: { kind: { const: 'point' }, xy: { type: 'array', items: { type: 'number' }, minItems: 2, maxItems: 2 } }, required: ['kind', 'xy'] },
  patterns: { type: 'object', properties: { code: { type: 'string', pattern: '^[A-Z]{3}-[0-9]{2,4}$' }, day: { type: 'string', format: 'date' }, id: { type: 'string', format: 'uuid' }, host: { type: 'string', format: 'ipv4' }, tag: { type: 'string', pattern: 'x', maxLength: 6 } }, required: ['code', 'day', 'id', 'host', 'tag'] },
  bounds: { type: 'object', properties: { n: { type: 'integer', minimum: -3, maximum: 12 }, p: { type: 'number', exclusiveMinimum: 0, maximum: 1 }, big: { type: 'integer', minimum: 1000 }, neg: { type: 'number', maximum: -0.5 } }, required: ['n', 'p', 'big', 'neg'] },
  multiples: { type: 'object', properties: { price: { type: 'number', multipleOf: 0.01, minimum: 0, maximum: 1000 }, step: { type: 'integer', multipleOf: 5 }, half: { type: 'number', multipleOf: 0.5 } }, required: ['price', 'step', 'half'] },
  // pydantic's Tuple[int, str, float]
  tuple: { type: 'object', properties: { t: { type: 'array', prefixItems: [{ type: 'integer' }, { type: 'string', maxLength: 6 }, { type: 'number', minimum: 0.25, maximum: 0.5 }], minItems: 3, maxItems: 3 } }, required: ['t'] },
  // pydantic's shape for a described model field: allOf around a $ref
  // recursive: a tree through "#" (OpenAI's UI example) and a linked list through $defs
  tree: { type: 'object', properties: { name: { type: 'string', maxLength: 8 }, children: { type: 'array', items: { $ref: '#' }, maxItems: 2 } }, required: ['name', 'children'], additionalProperties: false },
  linked: { $defs: { Node: { type: 'object', properties: { value: { type: 'integer' }, next: { anyOf: [{ $ref: '#/$defs/Node' }, { type: 'null' }] } }, required: ['value', 'next'] } }, $ref: '#/$defs/Node' },
  pydantic: { $defs: { Pet: { type: 'object', properties: { name: { type: 'string', maxLength: 10 }, kind: { enum: ['cat', 'dog'] } }, required: ['name', 'kind'], additionalProperties: false } }, type: 'object', properties: { pet: { allOf: [{ $ref: '#/$defs/Pet' }], description: 'the pet' }, count: { allOf: [{ type: 'integer' }, { minimum: 1 }, { maximum: 9 }] } }, required: ['pet', 'count'] },
};
const names = Object.keys(S);

async function structured(schemaName, stream, i) {
  const schema = S[schemaName];
  const req = {
    model, max_tokens: 160, temperature: 1, seed: 1000 + i,
    messages: [{ role: 'user', content: `Give me a ${schemaName} as JSON.` }],
    response_format: { type: 'json_schema', json_schema: { name: schemaName, schema, strict: true } },
  };
  let text = '', reasoning = '', finish = null;
  if (stream) {
    const s = await client.chat.completions.create({ ...req, stream: true });
    for await (const c of s) {
      const ch = c.choices[0];
      if (!ch) continue;
      text += ch.delta.content || '';
      reasoning += ch.delta.reasoning_content || '';
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  } else {
    const r = await client.chat.completions.create(req);
    text = r.choices[0].message.content;
    reasoning = r.choices[0].message.reasoning_content || '';
    finish = r.choices[0].finish_reason;
  }
  assert.equal(finish, 'stop', `finish_reason for ${text}`);
  let value;
  try { value = JSON.parse(text); } catch (e) { throw new Error(`not JSON (${e.message}): ${text}`); }
  validate(schema, value);
  if (mode === 'r1') assert.ok(!reasoning.includes('</think>') && !text.includes('think>'), 'tags leaked');
  return value;
}

// 50 requests (every schema), half streaming, 6 at a time
await check(`${n_structured} structured outputs parse and validate`, async () => {
  const jobs = [];
  for (let i = 0; i < n_structured; i++) jobs.push([names[i % names.length], i % 2 === 1, i]);
  const errors = [];
  let next = 0;
  async function worker() {
    while (next < jobs.length) {
      const [n, st, i] = jobs[next++];
      try { await structured(n, st, i); } catch (e) { errors.push(`#${i} ${n} stream=${st}: ${e.message}`); }
    }
  }
  await Promise.all(Array.from({ length: 6 }, worker));
  assert.deepEqual(errors, []);
});

if (mode === 'v3') {
  await check('guided_regex and structured_outputs.regex: the whole output matches', async () => {
    const pattern = '[a-z]{3,8}@[a-z]{2,6}\\.(com|org)';
    for (const stream of [false, true]) {
      const req = { model, max_tokens: 40, seed: 11, messages: [{ role: 'user', content: 'An email address?' }], guided_regex: pattern };
      let text = '';
      if (stream) for await (const c of await client.chat.completions.create({ ...req, stream: true })) text += c.choices[0]?.delta?.content || '';
      else text = (await client.chat.completions.create(req)).choices[0].message.content;
      assert.match(text, new RegExp(`^(?:${pattern})$`), text);
    }
    const c = await client.completions.create({ model, prompt: 'Phone:', max_tokens: 20, seed: 3, structured_outputs: { regex: '\\d{3}-\\d{4}' } });
    assert.match(c.choices[0].text, /^\d{3}-\d{4}$/);
    await assert.rejects(client.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }], guided_regex: '(a' }),
      (e) => e.status === 400 && e.param === 'guided_regex' && /without '\)'/.test(e.message));
  });
}

await check('json_object mode gives an object', async () => {
  for (const stream of [false, true]) {
    const req = { model, max_tokens: 120, seed: 7, messages: [{ role: 'user', content: 'JSON please' }], response_format: { type: 'json_object' } };
    let text = '';
    if (stream) for await (const c of await client.chat.completions.create({ ...req, stream: true })) text += c.choices[0]?.delta?.content || '';
    else text = (await client.chat.completions.create(req)).choices[0].message.content;
    const v = JSON.parse(text);
    assert.equal(typeOf(v), 'object', text);
  }
});

const tools = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather for a city', parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 24 }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'] } } },
  { type: 'function', function: { name: 'search', description: 'Web search', parameters: { type: 'object', properties: { query: { type: 'string', maxLength: 40 }, top_k: { type: 'integer' } }, required: ['query'] } } },
];

async function toolCall(tool_choice, stream, parallel, seed) {
  const req = { model, max_tokens: 200, seed, messages: [{ role: 'user', content: 'What is the weather in Paris?' }], tools, tool_choice };
  if (parallel !== undefined) req.parallel_tool_calls = parallel;
  if (!stream) {
    const r = await client.chat.completions.create(req);
    return { calls: r.choices[0].message.tool_calls, finish: r.choices[0].finish_reason, content: r.choices[0].message.content };
  }
  const calls = [];
  let finish = null, content = '';
  for await (const c of await client.chat.completions.create({ ...req, stream: true })) {
    const ch = c.choices[0];
    if (!ch) continue;
    content += ch.delta.content || '';
    for (const d of ch.delta.tool_calls || []) {
      if (!calls[d.index]) {
        assert.ok(d.id && d.function?.name, 'the first delta of a call carries id and name');
        calls[d.index] = { id: d.id, type: d.type, function: { name: d.function.name, arguments: '' } };
      }
      calls[d.index].function.arguments += d.function?.arguments || '';
    }
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  return { calls, finish, content: content || null };
}

function checkCalls({ calls, finish, content }, allowed, exactlyOne) {
  assert.equal(finish, 'tool_calls');
  assert.ok(Array.isArray(calls) && calls.length >= 1, 'tool_calls is a non-empty list');
  if (exactlyOne) assert.equal(calls.length, 1);
  assert.ok(!content, `no content next to a forced call: ${content}`);
  for (const c of calls) {
    assert.match(c.id, /^call_[0-9a-f]{24}$/);
    assert.equal(c.type, 'function');
    assert.ok(allowed.includes(c.function.name), c.function.name);
    const tool = tools.find((t) => t.function.name === c.function.name);
    validate(tool.function.parameters, JSON.parse(c.function.arguments));
  }
}

for (const stream of [false, true]) {
  await check(`named tool_choice, stream=${stream}`, async () => {
    for (const seed of [1, 2, 3]) checkCalls(await toolCall({ type: 'function', function: { name: 'get_weather' } }, stream, undefined, seed), ['get_weather'], false);
  });
  await check(`tool_choice required, one call, stream=${stream}`, async () => {
    for (const seed of [4, 5, 6]) checkCalls(await toolCall('required', stream, false, seed), ['get_weather', 'search'], true);
  });
}

await check('tool history renders and answers', async () => {
  const r = await client.chat.completions.create({
    model, max_tokens: 8, tools, messages: [
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris","unit":"celsius"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '{"temp": 21}' },
    ],
  });
  assert.equal(r.choices[0].message.role, 'assistant');
});

await check('unsupported schema keyword is a 400 naming it', async () => {
  await assert.rejects(client.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }],
    response_format: { type: 'json_schema', json_schema: { name: 'p', schema: { type: 'array', uniqueItems: true } } } }),
  (e) => e.status === 400 && /uniqueItems/.test(e.message) && e.param === 'response_format');
  await assert.rejects(client.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }], tools, tool_choice: { type: 'function', function: { name: 'nope' } } }),
    (e) => e.status === 400 && e.param === 'tool_choice');
  await assert.rejects(client.chat.completions.create({ model, max_tokens: 2, messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: { name: 'p', schema: S.person } } }),
    (e) => e.status === 400 && e.param === 'max_tokens');
});

if (mode === 'r1') {
  await check('R1: reasoning_content, content, reasoning_tokens; include_reasoning false', async () => {
    const req = { model, max_tokens: 40, temperature: 0, ignore_eos: true, messages: [{ role: 'user', content: 'Think about it.' }] };
    const r = await client.chat.completions.create(req);
    const m = r.choices[0].message;
    assert.equal(typeof m.reasoning_content, 'string');
    assert.ok(m.reasoning_content.length > 0);
    assert.ok(r.usage.completion_tokens_details.reasoning_tokens > 0);
    assert.ok(r.usage.completion_tokens_details.reasoning_tokens <= r.usage.completion_tokens);
    const r2 = await client.chat.completions.create({ ...req, include_reasoning: false });
    assert.ok(!('reasoning_content' in r2.choices[0].message), 'include_reasoning false omits it');
    let streamed = '';
    for await (const c of await client.chat.completions.create({ ...req, stream: true })) streamed += c.choices[0]?.delta?.reasoning_content || '';
    assert.equal(streamed, m.reasoning_content, 'streamed reasoning equals the non-stream one');
  });
}

finish(`agents (${mode})`);
