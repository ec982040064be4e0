/* server/cors.h — cross-origin resource sharing (CORS) for browser clients.
 *
 * A web page served from another origin may call the API only if the server
 * says so: every answer to a request with an allowed `Origin` carries
 * `Access-Control-Allow-Origin`, and the browser's preflight (`OPTIONS` with
 * `Access-Control-Request-Method`) is answered with the methods and headers
 * the real request may use. The server never refuses a plain request for its
 * origin — the browser withholds the response from the page — but it answers a
 * preflight from an origin it does not allow with 403.
 *
 * The policy is `serve --allowed-origins` (cors_policy_parse):
 *   absent or ""  none: no CORS headers at all, every preflight refused (the
 *                 default: a browser page on another origin cannot drive a
 *                 server it happens to reach, e.g. one on localhost without a
 *                 key)
 *   "*"           any origin (vLLM's and llama.cpp's default)
 *   "A,B,..."     exactly these origins ("https://app.example.com",
 *                 "http://localhost:3000"), compared byte for byte
 *   '["A","B"]'   the same as a JSON array of strings (vLLM's spelling)
 * Requests carry the API key in `Authorization`, which is not a CORS
 * credential (cookies are), so "*" works with keys and no
 * `Access-Control-Allow-Credentials` is sent.
 *
 * Pure functions; thread-safe. Caller: server/http.c; the policy is checked
 * once at startup by server/cmd_serve.c. */
#ifndef MS_CORS_H
#define MS_CORS_H

#include "common/err.h"

#define CORS_MAX_ORIGIN 255 /* longer Origin values are never allowed */
#define CORS_DEFAULT_HEADERS "Authorization, Content-Type, X-Request-Id"
#define CORS_MAX_AGE_S "600"

/* Parses an --allowed-origins value into *policy, a malloc'd comma-separated
 * list ("" for none) that the caller frees. Every entry must be "*" or an
 * origin "scheme://host[:port]" (no path, no spaces). 0, or -1 with err
 * naming the bad entry (*policy NULL). */
int cors_policy_parse(const char *arg, char **policy, ms_err *err);

/* The Access-Control-Allow-Origin value for a request whose Origin header is
 * origin (NULL: none sent) under a parsed policy (NULL: none): "*", origin
 * itself (listed), or NULL (no header). */
const char *cors_allow_origin(const char *policy, const char *origin);

/* The Access-Control-Allow-Headers value for a preflight that asked for
 * `requested` (Access-Control-Request-Headers, may be NULL): the request as
 * sent when it is a plain comma-separated list of header names (at most 512
 * bytes), else CORS_DEFAULT_HEADERS. */
const char *cors_allow_headers(const char *requested);

#endif
