// scripts/lib/bench-util.mjs — what the load scripts (bench-serving.mjs,
// bench-prefix.mjs, soak.mjs) share: deterministic prompt words and the
// Server-Sent-Events reader for streamed OpenAI responses.

export const WORDS = ('time person year way day thing man world life hand part child eye woman place work week case point ' +
  'government company number group problem fact river mountain ocean forest garden window kitchen letter music ' +
  'history science market village engine question answer morning evening winter summer bridge harbour island ' +
  'lantern silver copper marble thunder whisper journey promise shadow colour silence balance pattern signal ' +
  'library picture theory memory reason season teacher student doctor farmer sailor painter writer').split(' ');

// xorshift32: a seeded generator of floats in [0, 1).
export function rng(seed) {
  let x = (seed >>> 0) || 1;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x / 4294967296;
  };
}

// The JSON events of an SSE response body, each with the time its bytes
// arrived (performance.now()), up to "data: [DONE]"; throws if the stream ends
// without it or carries an error event.
export async function* sseEvents(res, now) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error('stream ended without [DONE]');
    const t = now();
    buf += dec.decode(value, { stream: true });
    let k;
    while ((k = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, k).replace(/\r$/, '');
      buf = buf.slice(k + 1);
      if (!line.startsWith('data:')) continue;
      const data = line.slice(5).trim();
      if (data === '[DONE]') return;
      const c = JSON.parse(data);
      if (c.error) throw new Error('error event: ' + JSON.stringify(c.error).slice(0, 300));
      yield { chunk: c, time: t };
    }
  }
}
