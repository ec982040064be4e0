#!/bin/sh
# Checks the deployment files without Docker: `nginx -t` on docker/nginx.conf
# (container names mapped to loopback) and on configs/nginx-upstream.conf (inside
# a minimal http block), `sh -n` on configs/*.sh, docker/compose.yml parsed as
# YAML (when python3-yaml is there), and hadolint on docker/Dockerfile* when it
# is installed (it is not packaged for Debian or npm; see docs/operations.md).
# Fails on the first broken file. Usage: sh scripts/lint-deploy.sh
set -u
cd "$(dirname "$0")/.."
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
rc=0
if [ -x "$NGINX" ]; then
    sed -e 's/mlaserve-a:8000/127.0.0.1:18001/; s/mlaserve-b:8000/127.0.0.1:18002/' \
        -e "s#/dev/stdout#$tmp/access.log#; s#/dev/stderr#$tmp/error.log#" docker/nginx.conf > "$tmp/docker.conf"
    printf 'events {}\nhttp { access_log %s/a.log; error_log %s/e.log; include %s/configs/nginx-upstream.conf; }\n' \
        "$tmp" "$tmp" "$PWD" > "$tmp/upstream.conf"
    for c in docker upstream; do
        if "$NGINX" -q -t -c "$tmp/$c.conf" -g "pid $tmp/nginx.pid; error_log $tmp/e.log;" 2>"$tmp/out"; then
            echo "lint: nginx -t $c config ok"
        else
            rc=1; echo "lint: nginx -t failed on the $c config:"; cat "$tmp/out"
        fi
    done
else
    echo "lint: nginx not installed: nginx configs not checked"
fi
for f in configs/*.sh; do sh -n "$f" || { rc=1; echo "lint: $f: syntax error"; }; done
if python3 -c 'import yaml' 2>/dev/null; then
    python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' docker/compose.yml ||
        { rc=1; echo "lint: docker/compose.yml is not valid YAML"; }
fi
if command -v hadolint >/dev/null 2>&1; then
    hadolint --ignore DL3008 docker/Dockerfile docker/Dockerfile.cpu || rc=1
else
    echo "lint: hadolint not installed: Dockerfiles not linted"
fi
[ $rc -eq 0 ] && echo "lint: deployment files ok"
exit $rc
