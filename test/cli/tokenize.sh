#!/bin/sh
# test/cli/tokenize.sh — `mlaserve tokenize` / `detokenize` end to end.
# Reference: $MLASERVE_GOLDEN/tokenizer/encode.jsonl (ids per text, golden SPEC §8).
# Checks: every golden text tokenizes to the golden ids; tokenize | detokenize |
# tokenize gives them again; a bad line yields {"error"} without stopping the
# stream (exit 1); exit codes 2 (usage) and 1 (bad model dir, message names the
# file). Needs MLASERVE_BIN, MLASERVE_TOKENIZER, MLASERVE_GOLDEN (run-tests.sh).
set -u
BIN=${MLASERVE_BIN:?}
TOK=${MLASERVE_TOKENIZER:?}
GOLD=${MLASERVE_GOLDEN:?}/tokenizer/encode.jsonl
TMP=$(mktemp -d) || exit 1
trap 'rm -rf "$TMP"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# golden ids, in the form tokenize prints them
sed 's/.*"ids":\(\[[^]]*\]\)}$/{"ids":\1}/' "$GOLD" > "$TMP/want"

"$BIN" tokenize --model "$TOK" < "$GOLD" > "$TMP/got" || fail "tokenize exit status $?"
cmp -s "$TMP/want" "$TMP/got" || fail "tokenize differs from encode.jsonl ($(diff "$TMP/want" "$TMP/got" | grep -c '^<') lines)"

"$BIN" tokenize --model "$TOK" < "$GOLD" | "$BIN" detokenize --model "$TOK" |
    "$BIN" tokenize --model "$TOK" > "$TMP/round" || fail "round trip exit status"
cmp -s "$TMP/want" "$TMP/round" || fail "tokenize | detokenize | tokenize differs from encode.jsonl"

# special tokens kept / skipped
printf '{"ids":[0,128803,19923,128804,6366,1],"skip_special_tokens":true}\n' |
    "$BIN" detokenize --model "$TOK" > "$TMP/skip"
[ "$(cat "$TMP/skip")" = '{"text":"<｜User｜>Hello<｜Assistant｜>hi"}' ] || fail "skip_special_tokens: $(cat "$TMP/skip")"

# a malformed line is reported in-band and the next line is still processed
printf '{"text":"Hello world"}\nnot json\n{"text":"Hello world"}\n' |
    "$BIN" tokenize --model "$TOK" > "$TMP/bad" 2>/dev/null
rc=$?
[ "$rc" -eq 1 ] || fail "bad line: exit $rc, want 1"
[ "$(sed -n 1p "$TMP/bad")" = '{"ids":[19923,2058]}' ] || fail "bad line: first output"
sed -n 2p "$TMP/bad" | grep -q '^{"error":"line 2: ' || fail "bad line: no error line: $(sed -n 2p "$TMP/bad")"
[ "$(sed -n 3p "$TMP/bad")" = '{"ids":[19923,2058]}' ] || fail "bad line: stream stopped"
printf '{"ids":"x"}\n' | "$BIN" detokenize --model "$TOK" 2>/dev/null | grep -q '"error"' || fail "detokenize bad line"

# exit codes
"$BIN" tokenize < /dev/null > /dev/null 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "tokenize without --model: exit $rc, want 2"
"$BIN" detokenize --model "$TOK" --frobnicate < /dev/null > /dev/null 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "unknown option: exit $rc, want 2"
"$BIN" tokenize --model "$TMP/nonexistent" < /dev/null > /dev/null 2> "$TMP/err"; rc=$?
[ "$rc" -eq 1 ] || fail "bad model dir: exit $rc, want 1"
grep -q "nonexistent/tokenizer.json" "$TMP/err" || fail "bad model dir: message does not name the file: $(cat "$TMP/err")"
mkdir "$TMP/broken" && printf '{"model": ' > "$TMP/broken/tokenizer.json"
"$BIN" detokenize --model "$TMP/broken" < /dev/null > /dev/null 2> "$TMP/err"; rc=$?
[ "$rc" -eq 1 ] || fail "corrupt tokenizer.json: exit $rc, want 1"
grep -q "broken/tokenizer.json: invalid JSON" "$TMP/err" || fail "corrupt tokenizer.json: $(cat "$TMP/err")"
"$BIN" tokenize --help > /dev/null || fail "--help exit status"

# a generated checkpoint directory works as --model too
CK=${MLASERVE_TEST_MODELS:-}/tiny-v3
if [ -n "${MLASERVE_TEST_MODELS:-}" ] && [ -f "$CK/tokenizer.json" ]; then
    printf '{"text":"Hello world"}\n' | "$BIN" tokenize --model "$CK" > "$TMP/ck"
    [ "$(cat "$TMP/ck")" = '{"ids":[19923,2058]}' ] || fail "checkpoint dir as --model"
fi

[ "$fails" -eq 0 ] && echo "tokenize.sh: ok" || echo "tokenize.sh: $fails failed"
[ "$fails" -eq 0 ]
