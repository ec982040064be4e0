#!/bin/sh
# test/cli/nginx_lb.sh — two mlaserve replicas behind nginx, one drained under
# load: what docs/operations.md ("Behind nginx") promises, with the shipped
# configs/nginx-upstream.conf itself (only its ports changed).
#
#  1. Two servers on tiny-v3 (free loopback ports, --threads 1 each) and nginx
#     on a free loopback port, run as an unprivileged-path instance: its own
#     prefix, config, pid, logs and temp directories in TMP. The config is
#     configs/nginx-upstream.conf included in a generated http {} block that
#     adds only logging (access log with $upstream_addr/$upstream_status) and
#     an X-Upstream response header naming the replica.
#  2. test/integration/lb_client.mjs sends 200 requests at concurrency 16
#     (streaming and not, chat and completions, 8..24 tokens) through nginx and
#     sends SIGTERM to replica A after 70 have completed. Every request must
#     succeed (200, well-formed body or SSE stream with finish_reason, usage
#     and [DONE]): A's in-flight requests finish during the drain, and what A
#     refuses (503 while draining, or a refused connection once it stopped
#     listening) nginx retries on B (proxy_next_upstream ... http_503
#     non_idempotent).
#  3. A exits by itself with status 0 (within 30 s), having logged the drain
#     and no request cancelled at the drain timeout; B still answers, through
#     nginx and directly, and its KV pages all come back free.
#  4. docker/nginx.conf has the same proxy settings as configs/nginx-upstream.conf.
# Everything (servers, nginx, TMP) is stopped/removed on exit, also on failure.
# Under the sanitizers (MLASERVE_TEST_TIME_SCALE) the time bounds scale and the
# run is shorter (64 requests, SIGTERM after 24). Needs MLASERVE_BIN,
# MLASERVE_TEST_MODELS (run-tests.sh), curl, node and nginx (skipped without nginx).
set -u
SCALE=${MLASERVE_TEST_TIME_SCALE:-1}
BIN=${MLASERVE_BIN:?}
MODEL=${MLASERVE_TEST_MODELS:?}/tiny-v3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
if [ ! -x "$NGINX" ]; then
    echo "nginx_lb.sh: nginx not installed: skipped"
    exit 0
fi
. "$(dirname "$0")/lib/server.sh"
T0=$(date +%s)
say() { echo "nginx_lb: $(($(date +%s) - T0)) s: $*"; }
N=200 KILL_AFTER=70
[ "$SCALE" -gt 1 ] && N=64 KILL_AFTER=24

# ---------------------------------------------------------------- 4. the two shipped configs agree
# (the proxy settings, balancing and body limit; server names and listen ports differ by design)
settings() {
    sed -n 's/^[[:space:]]*\(proxy_[a-z_]*\|least_conn\|keepalive\|client_max_body_size\)\([[:space:];]\)/\1\2/p' "$1" |
        sed 's/[[:space:]]\+/ /g'
}
settings "$ROOT/configs/nginx-upstream.conf" > "$TMP/set.upstream"
settings "$ROOT/docker/nginx.conf" > "$TMP/set.docker"
cmp -s "$TMP/set.upstream" "$TMP/set.docker" ||
    fail "docker/nginx.conf and configs/nginx-upstream.conf differ in their proxy settings: $(diff "$TMP/set.upstream" "$TMP/set.docker" | tr '\n' ' ')"
grep -q 'max_fails=2 fail_timeout=10s' "$ROOT/docker/nginx.conf" || fail "docker/nginx.conf: max_fails/fail_timeout changed"
grep -q '^[[:space:]]*proxy_next_upstream .*http_503.*non_idempotent' "$ROOT/configs/nginx-upstream.conf" ||
    fail "configs/nginx-upstream.conf no longer retries 503s of POSTs (proxy_next_upstream ... http_503 non_idempotent)"

# ---------------------------------------------------------------- 1. two replicas and nginx
start_server "$TMP/a" --threads 1 --drain-timeout $((30 * SCALE)) || { fail "replica A did not start"; exit 1; }
A_PID=$SPID A_PORT=$SPORT
start_server "$TMP/b" --threads 1 --drain-timeout $((30 * SCALE)) || { fail "replica B did not start"; exit 1; }
B_PID=$SPID B_PORT=$SPORT

NG=$TMP/nginx
mkdir -p "$NG"
# the shipped upstream config, on our ports
sed -e "s/127\.0\.0\.1:8001 /127.0.0.1:$A_PORT /; s/127\.0\.0\.1:8002 /127.0.0.1:$B_PORT /" \
    "$ROOT/configs/nginx-upstream.conf" > "$NG/upstream.tmpl"
grep -q "127.0.0.1:$A_PORT " "$NG/upstream.tmpl" && grep -q "127.0.0.1:$B_PORT " "$NG/upstream.tmpl" &&
    grep -q '^[[:space:]]*listen 8000;' "$NG/upstream.tmpl" ||
    { fail "configs/nginx-upstream.conf no longer has 'server 127.0.0.1:8001/8002' and 'listen 8000;' (update this test)"; exit 1; }
# as root the workers would switch to nobody and could not enter TMP (0700): keep them root
USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user root;"
TEMPS="client_body_temp_path $NG/client_body; proxy_temp_path $NG/proxy;"
for m in fastcgi uwsgi scgi; do
    "$NGINX" -V 2>&1 | grep -q -- "--without-http_${m}_module" || TEMPS="$TEMPS ${m}_temp_path $NG/$m;"
done
# -e (nginx >= 1.19.5): the error log before the config is read; else nginx opens its default one first
EFLAG=""
"$NGINX" -h 2>&1 | grep -q -- '-e filename' && EFLAG="-e $NG/error.log"

# start_nginx: a free port (asked from the kernel, then released: another process may take it
# first, so up to 5 tries), nginx in the foreground (its master's pid in NPID), ready when a
# request reaches a replica through it. Sets NPORT.
start_nginx() {
    _try=0
    while [ $_try -lt 5 ]; do
        _try=$((_try + 1))
        NPORT=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });')
        sed "s/^\([[:space:]]*\)listen 8000;/\1listen 127.0.0.1:$NPORT;/" "$NG/upstream.tmpl" > "$NG/upstream.conf"
        cat > "$NG/nginx.conf" <<EOF
$USER_LINE
worker_processes 1;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events { worker_connections 1024; }
http {
    log_format lb '\$request_uri \$status up=[\$upstream_addr] ups=[\$upstream_status] t=\$request_time';
    access_log $NG/access.log lb;
    $TEMPS
    add_header X-Upstream \$upstream_addr always;
    include $NG/upstream.conf;
}
EOF
        # shellcheck disable=SC2086
        "$NGINX" -p "$NG/" -c "$NG/nginx.conf" $EFLAG -g 'daemon off;' > "$NG/stdout" 2>&1 &
        NPID=$!
        PIDS="$PIDS $NPID"
        _i=0
        while [ $_i -lt $((100 * SCALE)) ]; do
            [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NPORT/health")" = 200 ] && return 0
            kill -0 "$NPID" 2>/dev/null || break
            sleep 0.1
            _i=$((_i + 1))
        done
        kill "$NPID" 2>/dev/null
        wait "$NPID" 2>/dev/null
        echo "nginx_lb: nginx on port $NPORT did not come up (try $_try): $(tail -3 "$NG/error.log" "$NG/stdout" 2>/dev/null | tr '\n' ' ')"
    done
    return 1
}
start_nginx || { fail "nginx did not start"; exit 1; }
LB=http://127.0.0.1:$NPORT
say "replicas A :$A_PORT (pid $A_PID), B :$B_PORT; nginx :$NPORT"

# ---------------------------------------------------------------- 2. load, SIGTERM to A midway
node "$ROOT/test/integration/lb_client.mjs" --url "$LB" --requests $N --concurrency 16 --kill-pid "$A_PID" \
    --kill-after $KILL_AFTER --addr-a "127.0.0.1:$A_PORT" --timeout $((120 * SCALE)) > "$TMP/client.txt" 2>&1
crc=$?
grep -v '^lb_client_numbers ' "$TMP/client.txt"
[ $crc -eq 0 ] || fail "lb_client: requests failed (status $crc)"
numbers=$(sed -n 's/^lb_client_numbers //p' "$TMP/client.txt")
[ -n "$numbers" ] || numbers='{"by":{}}'
# A served requests before the signal (else the test proved nothing about draining)
node -e 'const n = JSON.parse(process.argv[1]); process.exit(n.by[process.argv[2]] > 0 ? 0 : 1)' \
    "$numbers" "127.0.0.1:$A_PORT" 2>/dev/null || fail "replica A served no request: $numbers"

# ---------------------------------------------------------------- 3. A exits 0 by itself; B serves
k=0
while kill -0 "$A_PID" 2>/dev/null && [ $k -lt $((300 * SCALE)) ]; do
    sleep 0.1
    k=$((k + 1))
done
if kill -0 "$A_PID" 2>/dev/null; then
    fail "replica A still running $((30 * SCALE)) s after the load ended (SIGTERM sent midway)"
else
    wait "$A_PID"
    arc=$?
    [ $arc -eq 0 ] || fail "replica A exited with status $arc, want 0"
    say "replica A exited with status $arc"
fi
grep -q 'draining' "$TMP/a.err" || fail "replica A did not log its drain: $(tail -3 "$TMP/a.err")"
grep -q 'cancelled at the drain timeout' "$TMP/a.err" && fail "replica A: $(grep 'cancelled at the drain timeout' "$TMP/a.err")"
a503=$(grep -c '"POST /v1/[a-z/]*" 503 ' "$TMP/a.err")
kill -0 "$B_PID" 2>/dev/null || fail "replica B died: $(tail -5 "$TMP/b.err")"
st=$(curl -s -m $((30 * SCALE)) -o "$TMP/after.json" -w '%{http_code}' -H 'Content-Type: application/json' \
    -d '{"model":"tiny-v3","messages":[{"role":"user","content":"after the drain"}],"max_tokens":4}' \
    "$LB/v1/chat/completions")
[ "$st" = 200 ] && grep -q '"finish_reason"' "$TMP/after.json" || fail "request through nginx after A left: status $st: $(head -c 300 "$TMP/after.json")"
st=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$B_PORT/ready")
[ "$st" = 200 ] || fail "replica B /ready: $st"
_k=0 settled=0
while [ $_k -lt $((50 * SCALE)) ]; do
    curl -s -m 5 "http://127.0.0.1:$B_PORT/metrics" > "$TMP/m.txt"
    t=$(sed -n 's/^mlaserve:kv_pages_total \([0-9]*\).*/\1/p' "$TMP/m.txt")
    f=$(sed -n 's/^mlaserve:kv_pages_free \([0-9]*\).*/\1/p' "$TMP/m.txt")
    r=$(sed -n 's/^mlaserve:num_requests_running \([0-9]*\).*/\1/p' "$TMP/m.txt")
    [ -n "$t" ] && [ "$t" = "$f" ] && [ "$r" = 0 ] && { settled=1; break; }
    sleep 0.1
    _k=$((_k + 1))
done
[ $settled -eq 1 ] || fail "replica B after the run: kv pages free $f of $t, running $r"

# nginx's view: every /v1/ answer 200; how many it retried on the other replica, and why
bad=$(grep '^/v1/' "$NG/access.log" | grep -vc '^/v1/[^ ]* 200 ')
[ "$bad" -eq 0 ] || fail "nginx answered $bad /v1/ requests with a status other than 200: $(grep '^/v1/' "$NG/access.log" | grep -v '^/v1/[^ ]* 200 ' | head -3 | tr '\n' ' ')"
r503=$(grep -c 'ups=\[503, ' "$NG/access.log")
rerr=$(grep -c 'ups=\[502, ' "$NG/access.log")
say "A answered $a503 requests 503 while draining; nginx retried $r503 after a 503 and $rerr after a connection error"
grep -E '\[(error|crit|alert|emerg)\]' "$NG/error.log" | head -5 | sed 's/^/nginx_lb: (info) nginx error log: /'

[ -n "${NGINX_LB_DEBUG:-}" ] && cp -r "$TMP" "$NGINX_LB_DEBUG"
say "done"
[ $fails -eq 0 ] && echo "nginx_lb.sh: all checks passed"
[ $fails -eq 0 ]
