# test/cli/lib/ep_requests.sh — sourced by ep.sh and ep_nodes.sh (needs SCALE):
# the request mix both compare across rank and node counts.
# requests FILE PORT: 16 concurrent completions (prompts of 2..~200 tokens, 4..40
# new tokens, greedy, ignore_eos); writes [text...] to FILE; fails on any non-200.
requests() {
    node - "$1" "$2" <<'JS'
const [file, port] = process.argv.slice(2);
const words = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu'.split(' ');
const reqs = Array.from({length: 16}, (_, i) => ({
  model: 'tiny-v3', temperature: 0, ignore_eos: true, max_tokens: 4 + (i * 7) % 37,
  prompt: Array.from({length: 1 + (i * 13) % 150}, (_, k) => words[(i + k * 5) % words.length]).join(' ')}));
Promise.all(reqs.map(async r => {
  const res = await fetch(`http://127.0.0.1:${port}/v1/completions`,
    {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(r)});
  const j = await res.json();
  if (res.status !== 200) throw new Error(`status ${res.status}: ${JSON.stringify(j)}`);
  if (j.usage.completion_tokens !== r.max_tokens) throw new Error(`completion_tokens ${j.usage.completion_tokens}`);
  return j.choices[0].text;
})).then(t => require('fs').writeFileSync(file, JSON.stringify(t)), e => { console.error(e.message); process.exit(1); });
JS
}
solo() { curl -s -m $((60 * SCALE)) "http://127.0.0.1:$1/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model":"tiny-v3","prompt":"one request alone","max_tokens":20,"temperature":0,"ignore_eos":true}' |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).choices[0].text))'; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | grep "^mlaserve:$2" ; }

