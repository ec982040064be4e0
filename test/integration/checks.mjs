// test/integration/checks.mjs — the named-check runner the SDK tests share:
// check(name, fn) runs one async check and records a failure with its stack
// (the others still run); finish(label) prints the tally and every failure,
// then exits 1 if any check failed.
let passed = 0;
const failures = [];

export async function check(name, fn) {
  try {
    await fn();
    passed++;
  } catch (e) {
    failures.push(`${name}: ${e && e.stack ? e.stack : e}`);
  }
}

export function finish(label) {
  console.log(`${label}: ${passed} passed, ${failures.length} failed`);
  for (const f of failures) console.log(`FAIL: ${f}`);
  process.exit(failures.length ? 1 : 0);
}
