// test/integration/lb_client.mjs — load through a balancer while one replica
// drains (test/cli/nginx_lb.sh). Node 20+, plain fetch, no dependencies.
//
// Sends --requests requests, --concurrency at a time (closed loop), against
// BASE_URL (the balancer): request i is streaming when i is even, chat when
// (i >> 1) is odd (so all four kinds alternate), max_tokens 8..24, temperature
// 0, ignore_eos (every answer must have exactly max_tokens tokens, finish
// "length"). Once --kill-after requests have completed it sends SIGTERM to
// --kill-pid (the replica to drain). Every request must succeed: status 200, a
// well-formed JSON body, or an SSE stream whose every event is `data: <json>`
// followed by a blank line, with one finish_reason, the usage chunk and a final
// `data: [DONE]`.
//
// Which replica answered comes from the X-Upstream response header (nginx's
// $upstream_addr: "A" or, after a retry, "A, B"); --name-a/--name-b map
// addresses to names in the summary.
//
// Usage: node lb_client.mjs --url http://127.0.0.1:PORT [--requests 200] [--concurrency 16]
//            [--kill-pid PID --kill-after 70] [--addr-a HOST:PORT] [--timeout S] [--model NAME]
// Prints per-failure "FAIL: ..." lines and one summary line "lb_client: ..."; exits 1 on any failure.
const opt = { url: null, requests: 200, concurrency: 16, killPid: 0, killAfter: 70, addrA: null, timeout: 120,
              model: 'tiny-v3' };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i], v = process.argv[i + 1];
  if (v === undefined) { console.log('FAIL: lb_client: ' + k + ' needs a value'); process.exit(2); }
  if (k === '--url') opt.url = v.replace(/\/+$/, '');
  else if (k === '--requests') opt.requests = +v;
  else if (k === '--concurrency') opt.concurrency = +v;
  else if (k === '--kill-pid') opt.killPid = +v;
  else if (k === '--kill-after') opt.killAfter = +v;
  else if (k === '--addr-a') opt.addrA = v;
  else if (k === '--timeout') opt.timeout = +v;
  else if (k === '--model') opt.model = v;
  else { console.log('FAIL: lb_client: unknown option ' + k); process.exit(2); }
}
if (!opt.url) { console.log('FAIL: lb_client: --url is required'); process.exit(2); }

const WORDS = ('the sea is wide and deep under a grey sky where ships sail slowly toward distant harbours ' +
  'carrying grain timber salt and letters from people who wait for news of home').split(' ');

function makeRequest(i) {
  const stream = i % 2 === 0, chat = (i >> 1) % 2 === 1;
  const maxTokens = 8 + (i * 7) % 17;
  const words = [];
  for (let k = 0; k < 6 + (i * 13) % 30; k++) words.push(WORDS[(i * 31 + k * 7) % WORDS.length]);
  const text = 'Balancer request ' + i + ': ' + words.join(' ');
  const body = { model: opt.model, max_tokens: maxTokens, temperature: 0, ignore_eos: true };
  if (chat) body.messages = [{ role: 'user', content: text }];
  else body.prompt = text;
  if (stream) { body.stream = true; body.stream_options = { include_usage: true }; }
  return { i, stream, chat, maxTokens, path: chat ? '/v1/chat/completions' : '/v1/completions', body };
}

// Throws with a reason when the answer is not a complete, well-formed one.
function checkJson(r, text) {
  let j;
  try { j = JSON.parse(text); } catch { throw new Error('body is not JSON: ' + text.slice(0, 120)); }
  const want = r.chat ? 'chat.completion' : 'text_completion';
  if (j.object !== want) throw new Error('object ' + JSON.stringify(j.object) + ', want ' + want);
  if (!Array.isArray(j.choices) || j.choices.length !== 1) throw new Error('choices: ' + JSON.stringify(j.choices));
  const c = j.choices[0];
  const content = r.chat ? c.message && c.message.content : c.text;
  if (typeof content !== 'string') throw new Error('no text in ' + JSON.stringify(c).slice(0, 120));
  if (c.finish_reason !== 'length') throw new Error('finish_reason ' + JSON.stringify(c.finish_reason));
  if (!j.usage || j.usage.completion_tokens !== r.maxTokens)
    throw new Error('usage ' + JSON.stringify(j.usage) + ', want completion_tokens ' + r.maxTokens);
}

function checkSse(r, raw) {
  if (!raw.endsWith('data: [DONE]\n\n')) throw new Error('stream does not end with data: [DONE] (' + raw.length +
                                                         ' bytes, tail ' + JSON.stringify(raw.slice(-80)) + ')');
  const lines = raw.split('\n');
  lines.pop(); // raw ends with "\n\n": the last split element is the empty tail, the one before the blank line
  const events = [];
  for (let k = 0; k < lines.length; k += 2) {
    if (!lines[k].startsWith('data: ')) throw new Error('line ' + k + ' is not a data line: ' + lines[k].slice(0, 80));
    if (lines[k + 1] !== '') throw new Error('no blank line after event line ' + k);
    events.push(lines[k].slice(6));
  }
  if (events.pop() !== '[DONE]') throw new Error('last event is not [DONE]');
  const want = r.chat ? 'chat.completion.chunk' : 'text_completion';
  const finish = [];
  let usage = null;
  for (const e of events) {
    let c;
    try { c = JSON.parse(e); } catch { throw new Error('event is not JSON: ' + e.slice(0, 80)); }
    if (c.error) throw new Error('error event: ' + e.slice(0, 160));
    if (c.object !== want) throw new Error('chunk object ' + JSON.stringify(c.object) + ', want ' + want);
    if (c.usage) usage = c.usage;
    for (const ch of c.choices || []) if (ch.finish_reason) finish.push(ch.finish_reason);
  }
  if (finish.join() !== 'length') throw new Error('finish reasons ' + JSON.stringify(finish));
  if (!usage || usage.completion_tokens !== r.maxTokens)
    throw new Error('usage ' + JSON.stringify(usage) + ', want completion_tokens ' + r.maxTokens);
}

const t0 = Date.now();
let killedAt = 0; // ms since t0 when SIGTERM went out
let killedAfter = 0; // requests completed then
let completed = 0;
const results = [];

async function one(i) {
  const r = makeRequest(i);
  const res = { i, stream: r.stream, chat: r.chat, ok: false, error: null, upstream: '', start: Date.now() - t0,
                end: 0, startedAfterKill: killedAt > 0 };
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), opt.timeout * 1000);
  try {
    const resp = await fetch(opt.url + r.path, { method: 'POST', headers: { 'content-type': 'application/json' },
                                                body: JSON.stringify(r.body), signal: ctl.signal });
    res.upstream = resp.headers.get('x-upstream') || '';
    const text = await resp.text(); // a stream is read to its end: [DONE], then the connection's last chunk
    if (resp.status !== 200) throw new Error('status ' + resp.status + ': ' + text.slice(0, 160).replace(/\s+/g, ' '));
    if (r.stream) {
      const ct = resp.headers.get('content-type') || '';
      if (!ct.startsWith('text/event-stream')) throw new Error('content-type ' + ct);
      checkSse(r, text);
    } else {
      checkJson(r, text);
    }
    res.ok = true;
  } catch (e) {
    res.error = e.name === 'AbortError' ? 'no answer within ' + opt.timeout + ' s' : e.message;
  } finally {
    clearTimeout(timer);
  }
  res.end = Date.now() - t0;
  results.push(res);
  completed++;
  if (opt.killPid && !killedAt && completed >= opt.killAfter) {
    killedAt = Date.now() - t0;
    killedAfter = completed;
    try { process.kill(opt.killPid, 'SIGTERM'); } catch (e) {
      console.log('FAIL: lb_client: cannot signal pid ' + opt.killPid + ': ' + e.message);
      process.exitCode = 1;
    }
  }
}

let next = 0;
async function worker() {
  while (next < opt.requests) await one(next++);
}
await Promise.all(Array.from({ length: opt.concurrency }, worker));
const wall = (Date.now() - t0) / 1000;

const failed = results.filter((r) => !r.ok);
for (const r of failed.sort((a, b) => a.i - b.i))
  console.log('FAIL: request ' + r.i + ' (' + (r.chat ? 'chat' : 'completions') + (r.stream ? ', stream' : '') +
              ', upstream ' + (r.upstream || '?') + ', ' + r.start + '..' + r.end + ' ms): ' + r.error);
if (opt.killPid && !killedAt) { console.log('FAIL: lb_client: the SIGTERM was never sent'); process.exitCode = 1; }

// per replica: the last address of X-Upstream is the one that answered
const last = (u) => u.split(',').pop().trim();
const by = {};
for (const r of results) by[last(r.upstream) || '?'] = (by[last(r.upstream) || '?'] || 0) + 1;
const isA = (r) => opt.addrA && last(r.upstream) === opt.addrA;
const drainedOnA = results.filter((r) => killedAt && isA(r) && r.start < killedAt && r.end > killedAt).length;
const lateOnA = results.filter((r) => killedAt && isA(r) && r.startedAfterKill).length;
const retried = results.filter((r) => r.upstream.includes(',')).length;
const names = Object.keys(by).sort().map((k) => (k === opt.addrA ? 'A ' : '') + k + ': ' + by[k]).join(', ');
console.log('lb_client: ' + results.length + ' requests, ' + (results.length - failed.length) + ' ok, ' + failed.length +
            ' failed in ' + wall.toFixed(1) + ' s; SIGTERM to A after ' + killedAfter + '/' + opt.requests +
            (killedAt ? ' at ' + (killedAt / 1000).toFixed(1) + ' s' : ' (not sent)') + '; served by ' + names +
            '; retried on the other replica: ' + retried + '; finished on A after the signal: ' + drainedOnA +
            ' in flight, ' + lateOnA + ' sent after it');
// for the shell script: numbers it checks
console.log('lb_client_numbers ' + JSON.stringify({ ok: results.length - failed.length, failed: failed.length,
                                                    drainedOnA, lateOnA, retried, by }));
if (failed.length) process.exitCode = 1;
