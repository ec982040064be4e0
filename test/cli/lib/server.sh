# test/cli/lib/server.sh — sourced by the server test scripts (not run on its own:
# run-tests.sh runs test/cli/*.sh only). Needs BIN and MODEL set. Provides TMP (a
# scratch directory), fail() with its count in $fails, start_server(), and an EXIT
# trap that stops every server started (SIGTERM, then SIGKILL after 5 s) and
# removes TMP.
TMP=$(mktemp -d) || exit 1
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    for i in 1 2 3 4 5 6 7 8 9 10; do
        alive=0
        for p in $PIDS; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive -eq 0 ] && break
        sleep 0.5
    done
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# start_server LOG ARGS...: starts in the background, sets SPID and SPORT, waits for /ready (60 s at most)
start_server() {
    log=$1
    shift
    : > "$log.err"
    "$BIN" serve --model "$MODEL" --port 0 --threads 2 "$@" > "$log.out" 2> "$log.err" &
    SPID=$!
    PIDS="$PIDS $SPID"
    SPORT=""
    i=0
    while [ $i -lt 600 ]; do
        [ -z "$SPORT" ] && SPORT=$(sed -n 's/.*HTTP on port \([0-9]*\).*/\1/p' "$log.err" | head -1)
        if [ -n "$SPORT" ] && [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SPORT/ready")" = 200 ]; then
            return 0
        fi
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    echo "server did not become ready:"
    cat "$log.err"
    return 1
}
