#!/usr/bin/env bash
# Proxy overhead benchmark: in one run on this machine, wrk through
#   (a) nginx as a plain TLS reverse proxy, and
#   (b) the Tsuzuku gateway with a valid session and a 20-policy set,
# both in front of the same small upstream (an nginx that answers `200 ok`), for several rounds.
# Prints per-round and median throughput, p99 latency and CPU time per request (user + system of
# the gateway process; of nginx's proxy master and workers) of both, a markdown snippet for
# docs/BENCHMARKS.md, and, as its last line, `gateway/nginx throughput ratio: X`.
# Each round also runs both sides at a paced load (PACED_RPS in all, far below either side's
# capacity), where a request's latency is the proxy's own work and not queueing behind others:
# with wrk's fixed connections, a side's latency at full load is its connections divided by its
# throughput, so the full-load p99s differ as much as the throughputs do.
# Targets (issue): X >= 0.9, and p99 latency added by the gateway over nginx <= 1 ms.
#
# Like with like: both sides terminate TLS with the same certificate and key (the gateway's, in
# its data directory), both keep HTTP/1.1 connections to the upstream alive, and both write one
# record per request (nginx its access log, the gateway its audit event).
# Everything listens on 127.0.0.1 only; everything started here is stopped on exit.
#
# Usage: bench/proxy/run.sh [--smoke | --instructions]
#   --smoke         1 round of 2 s per side: checks that the script works, figures mean little.
#   --instructions  instead of wrk rounds: each proxy runs under valgrind's callgrind, one at a
#                   time, as one process (nginx without its master, one worker), and serves
#                   `wrk -t1 -c8` for DURATION seconds; prints the user-space instructions per
#                   request of each and their ratio. Instruction counts do not move with the
#                   machine's load, so they show what a change does to the gateway's own work
#                   (not the kernel's: system calls and wake-ups are not counted). Needs valgrind.
# Environment: ROUNDS (5), DURATION (seconds per side per round, 10), CONNS (64), THREADS (2),
#   PACED_RPS (requests a second in all for the paced runs, 4000; 0 skips them),
#   TSUZUKU_LOG (gateway log filter, default as shipped), KEEP_TMP=1 keeps the temp directory,
#   TSUZUKU_BIN (a tsuzuku binary to use instead of building target/release/tsuzuku).
# Needs nginx, wrk, curl and openssl (scripts/install-test-deps.sh installs nginx and wrk).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

smoke=0
instructions=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    --instructions) instructions=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "run.sh: unknown argument '$arg' (only --smoke or --instructions)" >&2
      exit 2
      ;;
  esac
done

if [ "$smoke" = 1 ]; then
  ROUNDS="${ROUNDS:-1}"
  DURATION="${DURATION:-2}"
fi
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-64}"
PACED_RPS="${PACED_RPS:-4000}"
THREADS="${THREADS:-2}"
for v in ROUNDS DURATION CONNS THREADS; do
  if ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: $v must be a positive whole number, got '${!v}'" >&2
    exit 2
  fi
done
WARMUP="$((DURATION < 3 ? 1 : 3))"

nginx_bin="$(command -v nginx || true)"
if [ -z "$nginx_bin" ] && [ -x /usr/sbin/nginx ]; then
  nginx_bin=/usr/sbin/nginx
fi
for need in wrk curl openssl; do
  command -v "$need" >/dev/null 2>&1 || {
    echo "run.sh: '$need' is not installed (scripts/install-test-deps.sh installs nginx and wrk)" >&2
    exit 1
  }
done
[ -n "$nginx_bin" ] || {
  echo "run.sh: 'nginx' is not installed (scripts/install-test-deps.sh installs it)" >&2
  exit 1
}

log() { echo "[bench] $*" >&2; }

# ---------------------------------------------------------------- temp dir, cleanup
tmp="$(mktemp -d "${TMPDIR:-/tmp}/tsuzuku-bench.XXXXXX")"
pids=()
# stop_pid PID [TENTHS]: asks the process to stop, gives it TENTHS tenths of a second (50), then
# kills it.
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq "${2:-50}"); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    stop_pid "$pid"
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then
    log "kept $tmp"
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "run.sh: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# A port nobody listens on now (checked by connecting), below the kernel's ephemeral range: a
# port in that range can be the local end of one of the benchmark's own connections, and then
# binding a listener to it fails.
read -r eph_low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph_low=32768
port_low=10000
port_span=$((eph_low > port_low + 1000 ? eph_low - port_low : 20000))
used_ports=" "
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((port_low + RANDOM % port_span))
    [[ "$used_ports" == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      used_ports+="$p "
      echo "$p"
      return 0
    fi
  done
  echo "run.sh: found no free port on 127.0.0.1" >&2
  return 1
}

# Waits until something accepts TCP connections on 127.0.0.1:$1 (or the process $2 dies).
wait_port() {
  local port="$1" pid="$2" what="$3"
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run.sh: $what exited before listening on 127.0.0.1:$port" >&2
      [ -n "${4:-}" ] && tail -n 5 "$4" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "run.sh: $what did not listen on 127.0.0.1:$port within 10 s" >&2
  return 1
}

up_port="$(free_port)"
ngx_port="$(free_port)"
gw_port="$(free_port)"

# ---------------------------------------------------------------- build
if [ -n "${TSUZUKU_BIN:-}" ]; then
  tsuzuku="$TSUZUKU_BIN"
  log "using the gateway binary $tsuzuku (TSUZUKU_BIN)"
else
  log "building the gateway (cargo build --release -p tsuzuku)"
  (cd "$root" && cargo build --release -p tsuzuku --quiet)
  tsuzuku="${CARGO_TARGET_DIR:-$root/target}/release/tsuzuku"
fi
[ -x "$tsuzuku" ] || {
  echo "run.sh: no gateway binary at $tsuzuku" >&2
  exit 1
}

# ---------------------------------------------------------------- gateway data dir
data="$tmp/gateway"
tz() { "$tsuzuku" --data-dir "$data" "$@"; }

log "initialising the gateway data directory"
tz init --listen "127.0.0.1:$gw_port" >"$tmp/init.log"
app_host="bench.localhost:$gw_port"
portal_host="auth.localhost:$gw_port"
cert="$data/tls/gateway.pem"
key="$data/tls/gateway-key.pem"
ca="$data/tls/ca.pem"
for f in "$cert" "$key" "$ca"; do
  [ -f "$f" ] || {
    echo "run.sh: tsuzuku init did not create $f" >&2
    exit 1
  }
done
# init's certificate names only the quick start's hosts (auth.localhost, demo.localhost,
# localhost). Replace it, as an operator brings their own, with one from a benchmark CA that also
# names bench.localhost; same key type as init's (ECDSA P-256). nginx serves the same files.
tls_tmp="$tmp/tls"
mkdir -p "$tls_tmp"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=Tsuzuku benchmark CA" -keyout "$tls_tmp/ca-key.pem" -out "$ca" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=Tsuzuku gateway" -keyout "$tls_tmp/leaf-key.pem" -out "$tls_tmp/leaf.csr" 2>/dev/null
printf '%s\n' "subjectAltName=DNS:bench.localhost,DNS:auth.localhost,DNS:localhost,IP:127.0.0.1" \
  "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature" >"$tls_tmp/leaf.ext"
openssl x509 -req -in "$tls_tmp/leaf.csr" -CA "$ca" -CAkey "$tls_tmp/ca-key.pem" -CAcreateserial \
  -days 2 -extfile "$tls_tmp/leaf.ext" -out "$tls_tmp/leaf.pem" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$tls_tmp/leaf-key.pem" -out "$key"
cat "$tls_tmp/leaf.pem" "$ca" >"$cert"

bench_user="bench"
bench_pw="bench-$(openssl rand -hex 16)"
printf '%s\n' "$bench_pw" | tz user add "$bench_user" --group staff --password-stdin >"$tmp/user.log"
tz app add bench --host "$app_host" --upstream "http://127.0.0.1:$up_port" --data-class internal \
  >"$tmp/app.log"

# 20 policies: 19 that are evaluated but do not decide the bench request (other groups and apps,
# conditions the request does not meet, forbids that do not apply), and 1 that permits it.
pol="$tmp/policies"
mkdir -p "$pol"
n=0
put() {
  n=$((n + 1))
  printf '%s\n' "$1" >"$pol/$(printf '%02d' "$n")-$2.cedar"
}
for team in sales finance hr legal marketing support ops research; do
  put "permit (principal in Tsuzuku::Group::\"$team\", action in Tsuzuku::Action::\"access\", resource == Tsuzuku::App::\"$team-portal\")
when { context.local_time >= duration(\"7h\") && context.local_time <= duration(\"21h\") };" "team-$team"
done
put 'permit (principal in Tsuzuku::Group::"admins", action in Tsuzuku::Action::"access", resource)
when { principal.mfa && principal.auth_age_secs < 43200 };' admins-mfa
put 'permit (principal in Tsuzuku::Group::"contractors", action == Tsuzuku::Action::"read", resource)
when { resource.data_class == "public" };' contractors-public
put 'permit (principal in Tsuzuku::Group::"payroll", action in Tsuzuku::Action::"access", resource == Tsuzuku::App::"payroll")
when { principal.mfa && context has device && context.device.company_issued && context.device.disk_encrypted };' payroll-device
put 'permit (principal in Tsuzuku::Group::"oncall", action in Tsuzuku::Action::"access", resource)
when { resource.critical && principal.mfa };' oncall-critical
put 'permit (principal in Tsuzuku::Group::"partners", action == Tsuzuku::Action::"read", resource)
when { resource.isolated && ["Mon", "Tue", "Wed", "Thu", "Fri"].contains(context.weekday) };' partners-isolated
put 'permit (principal == Tsuzuku::User::"auditor", action == Tsuzuku::Action::"read", resource == Tsuzuku::App::"audit-viewer");' auditor
put 'forbid (principal, action == Tsuzuku::Action::"write", resource)
when { resource.data_class == "restricted" && !principal.mfa };' restricted-write-mfa
put 'forbid (principal, action in Tsuzuku::Action::"access", resource)
when { context.source_ip.isInRange(ip("203.0.113.0/24")) || context.source_ip.isInRange(ip("198.51.100.0/24")) };' blocked-ranges
put 'forbid (principal, action in Tsuzuku::Action::"access", resource)
when { context.path like "/admin/*" && !(principal in Tsuzuku::Group::"admins") };' admin-paths
put 'forbid (principal, action in Tsuzuku::Action::"access", resource)
when { resource.data_class == "confidential" && context has device && !context.device.antivirus_running };' confidential-antivirus
put 'forbid (principal in Tsuzuku::Group::"suspended", action in Tsuzuku::Action::"access", resource);' suspended
put 'permit (principal in Tsuzuku::Group::"staff", action in Tsuzuku::Action::"access", resource == Tsuzuku::App::"bench");' staff-bench
if [ "$n" -ne 20 ]; then
  echo "run.sh: internal error: wrote $n policies, not 20" >&2
  exit 1
fi
tz policy validate "$pol"/*.cedar >"$tmp/validate.log"
tz policy apply "$pol"/*.cedar -m "proxy benchmark: 20 policies" >"$tmp/apply.log"

# ---------------------------------------------------------------- nginx: upstream and proxy
# Both nginx instances run in the foreground of their own background processes, from a temp
# prefix with their own configuration; neither reads the system configuration.
mime_types=""
for f in /etc/nginx/mime.types /usr/share/nginx/mime.types; do
  [ -f "$f" ] && mime_types="include $f;" && break
done
nginx_common() {
  local name="$1"
  cat <<EOF
daemon off;
master_process on;
$([ "$(id -u)" -eq 0 ] && echo "user root;")
worker_processes auto;
pid $tmp/$name/nginx.pid;
error_log $tmp/$name/error.log warn;
events { worker_connections 4096; multi_accept on; }
EOF
}
for name in upstream proxy; do
  mkdir -p "$tmp/$name"
done

{
  nginx_common upstream
  cat <<EOF
http {
  $mime_types
  access_log off;
  client_body_temp_path $tmp/upstream/body;
  proxy_temp_path $tmp/upstream/proxy;
  fastcgi_temp_path $tmp/upstream/fastcgi;
  uwsgi_temp_path $tmp/upstream/uwsgi;
  scgi_temp_path $tmp/upstream/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$up_port;
    default_type text/plain;
    location / { return 200 "ok\n"; }
  }
}
EOF
} >"$tmp/upstream/nginx.conf"

{
  nginx_common proxy
  cat <<EOF
http {
  $mime_types
  log_format bench '\$remote_addr [\$time_local] "\$request" \$status \$body_bytes_sent \$request_time';
  access_log $tmp/proxy/access.log bench;
  client_body_temp_path $tmp/proxy/body;
  proxy_temp_path $tmp/proxy/proxy;
  fastcgi_temp_path $tmp/proxy/fastcgi;
  uwsgi_temp_path $tmp/proxy/uwsgi;
  scgi_temp_path $tmp/proxy/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  upstream bench_upstream {
    server 127.0.0.1:$up_port;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:$ngx_port ssl;
    server_name bench.localhost;
    ssl_certificate $cert;
    ssl_certificate_key $key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto https;
    }
  }
}
EOF
} >"$tmp/proxy/nginx.conf"

for name in upstream proxy; do
  "$nginx_bin" -t -q -p "$tmp/$name" -c "$tmp/$name/nginx.conf" -e "$tmp/$name/error.log" || {
    echo "run.sh: nginx rejected $tmp/$name/nginx.conf:" >&2
    cat "$tmp/$name/error.log" >&2 || true
    exit 1
  }
done
"$nginx_bin" -p "$tmp/upstream" -c "$tmp/upstream/nginx.conf" -e "$tmp/upstream/error.log" \
  >"$tmp/upstream/stdout.log" 2>&1 &
pids+=("$!")
wait_port "$up_port" "$!" "upstream nginx" "$tmp/upstream/error.log"
"$nginx_bin" -p "$tmp/proxy" -c "$tmp/proxy/nginx.conf" -e "$tmp/proxy/error.log" \
  >"$tmp/proxy/stdout.log" 2>&1 &
ngx_pid=$!
pids+=("$ngx_pid")
wait_port "$ngx_port" "$ngx_pid" "proxy nginx" "$tmp/proxy/error.log"

# ---------------------------------------------------------------- gateway
log "starting the gateway on 127.0.0.1:$gw_port"
"$tsuzuku" --data-dir "$data" serve >"$tmp/gateway.out" 2>"$tmp/gateway.err" &
gw_pid=$!
pids+=("$gw_pid")
for _ in $(seq 150); do
  grep -q '^READY ' "$tmp/gateway.out" 2>/dev/null && break
  if ! kill -0 "$gw_pid" 2>/dev/null; then
    echo "run.sh: the gateway exited before it was ready; its stderr:" >&2
    cat "$tmp/gateway.err" >&2
    exit 1
  fi
  sleep 0.1
done
grep -q '^READY ' "$tmp/gateway.out" || {
  echo "run.sh: the gateway did not print READY within 15 s; its stderr:" >&2
  cat "$tmp/gateway.err" >&2
  exit 1
}

gateway_failed() {
  echo "run.sh: $*" >&2
  echo "--- gateway stderr (last 40 lines) ---" >&2
  tail -n 40 "$tmp/gateway.err" >&2 || true
  exit 1
}

# curl against the gateway: host names resolve to 127.0.0.1, certificates checked against its CA.
gcurl() {
  curl -sS --max-time 10 --cacert "$ca" \
    --resolve "bench.localhost:$gw_port:127.0.0.1" \
    --resolve "auth.localhost:$gw_port:127.0.0.1" "$@"
}

# ---------------------------------------------------------------- sign in
log "signing in as $bench_user"
jar="$tmp/cookies.txt"
# 1. The app without a session redirects to the portal's login page.
gcurl -c "$jar" -b "$jar" -o /dev/null -D "$tmp/h1" "https://$app_host/" || gateway_failed "GET https://$app_host/ failed"
status="$(awk 'NR==1{print $2}' "$tmp/h1")"
login_url="$(tr -d '\r' <"$tmp/h1" | awk 'tolower($1)=="location:"{print $2}')"
[ "$status" = 302 ] && [[ "$login_url" == "https://$portal_host/.tsuzuku/login?"* ]] ||
  gateway_failed "GET https://$app_host/ without a session: expected 302 to https://$portal_host/.tsuzuku/login?..., got $status '$login_url'"
# 2. The login page sets the CSRF cookie and carries the csrf and rd fields.
gcurl -c "$jar" -b "$jar" -o "$tmp/login.html" "$login_url" || gateway_failed "GET $login_url failed"
field() {
  # Value of the hidden input named $1 in the login form (either attribute order).
  tr '\n' ' ' <"$tmp/login.html" | grep -o "<input[^>]*name=\"$1\"[^>]*>" | head -n 1 |
    grep -o 'value="[^"]*"' | head -n 1 | sed 's/^value="//; s/"$//' |
    sed 's/&amp;/\&/g; s/&#x2F;/\//g; s/&#47;/\//g; s/&quot;/"/g; s/&#x27;/'"'"'/g; s/&#39;/'"'"'/g; s/&lt;/</g; s/&gt;/>/g' || true
}
csrf="$(field csrf)"
rd="$(field rd)"
[ -n "$csrf" ] || gateway_failed "the login page $login_url has no csrf field"
grep -q '__Host-tsuzuku_csrf' "$jar" || gateway_failed "the login page did not set __Host-tsuzuku_csrf"
# 3. POST the form: 303 to the app host's handoff.
gcurl -c "$jar" -b "$jar" -o /dev/null -D "$tmp/h3" \
  --data-urlencode "csrf=$csrf" --data-urlencode "rd=$rd" \
  --data-urlencode "username=$bench_user" --data-urlencode "password=$bench_pw" \
  --data-urlencode "totp=" \
  "https://$portal_host/.tsuzuku/login" || gateway_failed "POST https://$portal_host/.tsuzuku/login failed"
status="$(awk 'NR==1{print $2}' "$tmp/h3")"
handoff="$(tr -d '\r' <"$tmp/h3" | awk 'tolower($1)=="location:"{print $2}')"
[ "$status" = 303 ] && [[ "$handoff" == "https://$app_host/.tsuzuku/handoff?"* ]] ||
  gateway_failed "POST /.tsuzuku/login: expected 303 to https://$app_host/.tsuzuku/handoff?..., got $status '$handoff'"
# 4. The handoff sets the host-only session cookie on the app host.
gcurl -c "$jar" -b "$jar" -o /dev/null -D "$tmp/h4" "$handoff" || gateway_failed "GET $handoff failed"
session="$(tr -d '\r' <"$tmp/h4" | grep -i '^set-cookie: *__Host-tsuzuku_session=' | head -n 1 |
  sed 's/^[^=]*=//; s/;.*$//')"
[ -n "$session" ] || gateway_failed "GET $handoff set no __Host-tsuzuku_session cookie: $(head -n 1 "$tmp/h4")"
cookie="__Host-tsuzuku_session=$session"

# The session works: the app answers through the gateway.
check_session() {
  local code
  code="$(gcurl -H "Cookie: $cookie" -o "$tmp/check.body" -w '%{http_code}' "https://$app_host/")" ||
    gateway_failed "GET https://$app_host/ with the session failed"
  [ "$code" = 200 ] && [ "$(cat "$tmp/check.body")" = ok ] ||
    gateway_failed "GET https://$app_host/ with the session: expected 200 'ok', got $code: $(head -c 300 "$tmp/check.body")"
}
check_session
body="$(curl -sS --max-time 10 --cacert "$ca" --resolve "bench.localhost:$ngx_port:127.0.0.1" \
  "https://bench.localhost:$ngx_port/")"
[ "$body" = ok ] || {
  echo "run.sh: nginx proxy answered '$body' instead of 'ok'" >&2
  exit 1
}

# ---------------------------------------------------------------- wrk
# wrk connects to the host in its URL and sends that name as SNI. *.localhost names do not
# resolve through the system resolver here, so wrk connects to localhost (a name both
# certificates cover) and the Host header names the app, as a browser would send it.
wrk_url_host="localhost"
if getent hosts "bench.localhost" >/dev/null 2>&1; then
  wrk_url_host="bench.localhost"
fi

# Latency from wrk ("1.23ms", "850.00us", "1.02s") in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else { printf "nan" }
  }'
}

# CPU time (user + system, in clock ticks) used so far by the processes given, children excluded.
clk_tck="$(getconf CLK_TCK)"
cpu_ticks() {
  local total=0 pid t
  for pid in "$@"; do
    # Fields 14 and 15 of /proc/PID/stat (after the command name, which may contain spaces).
    t="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')" || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}
# The processes of each side whose CPU time is counted: the gateway process; nginx's proxy
# master and its workers (not the upstream, which both sides share).
side_pids() {
  case "$1" in
    gateway) echo "$gw_pid" ;;
    nginx) echo "$ngx_pid $(pgrep -P "$ngx_pid" | tr '\n' ' ')" ;;
  esac
}
# Requests wrk completed, from its report ("123456 requests in 10.00s, ...").
wrk_requests() { awk '$2 == "requests" && $3 == "in" {print $1}' "$1"; }
# The median latency from a wrk --latency report, in milliseconds.
wrk_p50() { to_ms "$(awk '$1 == "50%" {print $2}' "$1")"; }

# run_wrk SIDE SECONDS OUTFILE [paced]: one wrk run against nginx or the gateway; paced, each
# connection waits before each request so that all send about PACED_RPS a second (paced.lua).
run_wrk() {
  local side="$1" secs="$2" out="$3" pace="${4:-}"
  local args=(--latency -t "$THREADS" -c "$CONNS" -d "${secs}s" --timeout 5s)
  if [ "$pace" = paced ]; then
    args+=(-s "$tmp/paced.lua")
  fi
  case "$side" in
    nginx)
      wrk "${args[@]}" -H "Host: bench.localhost:$ngx_port" "https://$wrk_url_host:$ngx_port/" >"$out" 2>&1
      ;;
    gateway)
      wrk "${args[@]}" -H "Host: $app_host" -H "Cookie: $cookie" "https://$wrk_url_host:$gw_port/" >"$out" 2>&1
      ;;
  esac
}

# Reads a wrk report: prints "RPS P99_MS", fails on errors or non-2xx/3xx answers. (A denial is a
# 403 and counts; a lost session would be a 302, which wrk does not count, but check_session runs
# before and after every gateway run, and a session cannot come back once it is gone.)
parse_wrk() {
  local side="$1" out="$2" rps p99
  rps="$(awk '/^Requests\/sec:/{print $2}' "$out")"
  p99="$(awk '$1=="99%"{print $2}' "$out")"
  if [ -z "$rps" ] || [ -z "$p99" ]; then
    echo "run.sh: could not read wrk's report for $side:" >&2
    cat "$out" >&2
    return 1
  fi
  if grep -q 'Non-2xx or 3xx responses' "$out"; then
    echo "run.sh: $side answered with errors during the run:" >&2
    cat "$out" >&2
    [ "$side" = gateway ] && gateway_failed "the gateway answered non-2xx/3xx to wrk"
    return 1
  fi
  if grep -q 'Socket errors' "$out"; then
    log "$side: $(grep 'Socket errors' "$out" | sed 's/^ *//')"
  fi
  echo "$rps $(to_ms "$p99")"
}

median() {
  tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {
    if (NR == 0) { print "nan"; exit }
    if (NR % 2) printf "%.3f", a[(NR + 1) / 2]; else printf "%.3f", (a[NR / 2] + a[NR / 2 + 1]) / 2
  }'
}

# ---------------------------------------------------------------- instructions (--instructions)
if [ "$instructions" = 1 ]; then
  for need in valgrind callgrind_control callgrind_annotate; do
    command -v "$need" >/dev/null 2>&1 || {
      echo "run.sh: '$need' is not installed (apt-get install -y valgrind)" >&2
      exit 1
    }
  done
  # Total instructions in a callgrind dump, and those of the functions whose name contains $2.
  ir_total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'; }
  ir_in() {
    callgrind_annotate --inclusive=yes "$1" 2>/dev/null |
      awk -v f="$2" 'index($0, f) {gsub(",", "", $1); print $1; found = 1; exit} END {if (!found) print 0}'
  }
  # measure_ir SIDE PID PORT HOST [HEADER...]: warm up, zero the counters, run wrk, dump;
  # prints "REQUESTS DUMPFILE".
  measure_ir() {
    local side="$1" pid="$2" port="$3" host="$4"
    shift 4
    local args=(-t 1 -c 8 --timeout 10s -H "Host: $host" "$@" "https://$wrk_url_host:$port/")
    wrk -d 3s "${args[@]}" >"$tmp/ir-warm-$side.txt" 2>&1
    callgrind_control -z "$pid" >/dev/null 2>&1
    wrk -d "${DURATION}s" "${args[@]}" >"$tmp/ir-$side.txt" 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    grep -q 'Non-2xx or 3xx responses' "$tmp/ir-$side.txt" && {
      echo "run.sh: $side answered with errors under callgrind:" >&2
      cat "$tmp/ir-$side.txt" >&2
      exit 1
    }
    local dump=""
    for _ in $(seq 100); do
      dump="$(ls "$tmp"/cg."$side".*.1 2>/dev/null | head -n 1)"
      [ -n "$dump" ] && break
      sleep 0.1
    done
    [ -n "$dump" ] || {
      echo "run.sh: callgrind wrote no dump for $side" >&2
      exit 1
    }
    echo "$(wrk_requests "$tmp/ir-$side.txt") $dump"
  }
  log "restarting the gateway under callgrind"
  stop_pid "$gw_pid" 100
  valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.gateway.%p" \
    "$tsuzuku" --data-dir "$data" serve >"$tmp/gateway-cg.out" 2>"$tmp/gateway-cg.err" &
  vg_gw=$!
  pids+=("$vg_gw")
  for _ in $(seq 1200); do
    grep -q '^READY ' "$tmp/gateway-cg.out" 2>/dev/null && break
    kill -0 "$vg_gw" 2>/dev/null || break
    sleep 0.1
  done
  grep -q '^READY ' "$tmp/gateway-cg.out" || gateway_failed "the gateway did not start under callgrind"
  read -r gw_reqs gw_dump <<<"$(measure_ir gateway "$vg_gw" "$gw_port" "$app_host" -H "Cookie: $cookie")"
  stop_pid "$vg_gw" 100

  log "restarting the nginx proxy under callgrind (no master, one worker)"
  stop_pid "$ngx_pid" 100
  for k in $(pgrep -f "nginx -p $tmp/proxy" || true); do stop_pid "$k" 100; done
  sed -e 's/^master_process on;/master_process off;/' -e 's/^worker_processes auto;/worker_processes 1;/' \
    "$tmp/proxy/nginx.conf" >"$tmp/proxy/nginx-cg.conf"
  valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.nginx.%p" \
    "$nginx_bin" -p "$tmp/proxy" -c "$tmp/proxy/nginx-cg.conf" -e "$tmp/proxy/error.log" \
    >"$tmp/proxy/cg.log" 2>&1 &
  vg_ngx=$!
  pids+=("$vg_ngx")
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$ngx_port") 2>/dev/null && break
    sleep 0.1
  done
  read -r ngx_reqs ngx_dump <<<"$(measure_ir nginx "$vg_ngx" "$ngx_port" "bench.localhost:$ngx_port")"
  stop_pid "$vg_ngx" 100

  gw_ir="$(ir_total "$gw_dump")"
  gw_sha="$(ir_in "$gw_dump" "sha2::sha256::compress256")"
  ngx_ir="$(ir_total "$ngx_dump")"
  per() { awk -v t="$1" -v n="$2" 'BEGIN { printf "%.0f", (n > 0 ? t / n : 0) }'; }
  gw_per="$(per "$gw_ir" "$gw_reqs")"
  gw_sha_per="$(per "$gw_sha" "$gw_reqs")"
  ngx_per="$(per "$ngx_ir" "$ngx_reqs")"
  echo "Instructions per request (user space, callgrind; wrk -t 1 -c 8, ${DURATION} s each)"
  printf '  nginx:   %9s instructions/request (%s requests)\n' "$ngx_per" "$ngx_reqs"
  printf '  gateway: %9s instructions/request (%s requests), of which %s in SHA-256 blocks\n' \
    "$gw_per" "$gw_reqs" "$gw_sha_per"
  echo "  (valgrind hides the CPU's SHA extensions, so the gateway's SHA-256 runs in software here;"
  echo "   on the CPU it costs a tenth of that)"
  awk -v g="$gw_per" -v s="$gw_sha_per" -v n="$ngx_per" 'BEGIN {
    printf "gateway/nginx instructions ratio: %.2f (without SHA-256 blocks: %.2f)\n", g / n, (g - s) / n }'
  exit 0
fi

log "warm-up: ${WARMUP} s per side"
run_wrk nginx "$WARMUP" "$tmp/warm-nginx.txt"
parse_wrk nginx "$tmp/warm-nginx.txt" >/dev/null
run_wrk gateway "$WARMUP" "$tmp/warm-gateway.txt"
parse_wrk gateway "$tmp/warm-gateway.txt" >/dev/null
check_session

# The paced runs: every connection waits a random 0 to 2 * CONNS * 1000 / PACED_RPS ms before
# each request, so requests come spread out rather than in bursts of CONNS at once.
paced=0
if [ "$PACED_RPS" -gt 0 ] 2>/dev/null; then
  paced=1
  awk -v c="$CONNS" -v r="$PACED_RPS" 'BEGIN {
    printf "function delay()\n  return math.random(0, %d)\nend\n", 2 * c * 1000 / r }' >"$tmp/paced.lua"
fi
echo "Proxy benchmark: $ROUNDS round(s) x ${DURATION} s per side, wrk -t $THREADS -c $CONNS, HTTPS, keep-alive"
printf '%-6s %-8s %14s %10s %12s\n' round side requests/s p99_ms cpu_us/req
nginx_rps=() nginx_p99=() gw_rps=() gw_p99=() nginx_cpu=() gw_cpu=()
paced_nginx_p99=() paced_nginx_p50=() paced_nginx_rps=() paced_gw_p99=() paced_gw_p50=() paced_gw_rps=()
for r in $(seq "$ROUNDS"); do
  # Alternate which side goes first, so neither always runs on a warmer (or hotter) machine.
  if [ $((r % 2)) = 1 ]; then order=(nginx gateway); else order=(gateway nginx); fi
  for side in "${order[@]}"; do
    out="$tmp/round$r-$side.txt"
    # shellcheck disable=SC2046 # one word per pid
    t0="$(cpu_ticks $(side_pids "$side"))"
    run_wrk "$side" "$DURATION" "$out"
    # shellcheck disable=SC2046
    t1="$(cpu_ticks $(side_pids "$side"))"
    res="$(parse_wrk "$side" "$out")"
    read -r rps p99 <<<"$res"
    # CPU time of the side's processes during the run per completed request, in microseconds.
    cpu="$(awk -v d="$((t1 - t0))" -v hz="$clk_tck" -v n="$(wrk_requests "$out")" \
      'BEGIN { printf "%.1f", (n > 0 ? d / hz * 1e6 / n : 0) }')"
    if [ "$side" = nginx ]; then
      nginx_rps+=("$rps") nginx_p99+=("$p99") nginx_cpu+=("$cpu")
    else
      gw_rps+=("$rps") gw_p99+=("$p99") gw_cpu+=("$cpu")
      check_session
    fi
    printf '%-6s %-8s %14.0f %10.3f %12.1f\n' "$r" "$side" "$rps" "$p99" "$cpu"
  done
  if [ "$paced" = 1 ]; then
    for side in "${order[@]}"; do
      out="$tmp/round$r-$side-paced.txt"
      run_wrk "$side" "$DURATION" "$out" paced
      res="$(parse_wrk "$side" "$out")"
      read -r rps p99 <<<"$res"
      p50="$(wrk_p50 "$out")"
      if [ "$side" = nginx ]; then
        paced_nginx_p99+=("$p99") paced_nginx_p50+=("$p50") paced_nginx_rps+=("$rps")
      else
        paced_gw_p99+=("$p99") paced_gw_p50+=("$p50") paced_gw_rps+=("$rps")
        check_session
      fi
      printf '%-6s %-8s %14.0f %10.3f %12s  (paced; median %.3f ms)\n' "$r" "$side" "$rps" "$p99" "" "$p50"
    done
  fi
done

m_nginx_rps="$(echo "${nginx_rps[*]}" | median)"
m_nginx_p99="$(echo "${nginx_p99[*]}" | median)"
m_gw_rps="$(echo "${gw_rps[*]}" | median)"
m_gw_p99="$(echo "${gw_p99[*]}" | median)"
m_nginx_cpu="$(echo "${nginx_cpu[*]}" | median)"
m_gw_cpu="$(echo "${gw_cpu[*]}" | median)"
ratio="$(awk -v g="$m_gw_rps" -v n="$m_nginx_rps" 'BEGIN { printf "%.2f", (n > 0 ? g / n : 0) }')"
added="$(awk -v g="$m_gw_p99" -v n="$m_nginx_p99" 'BEGIN { printf "%.3f", g - n }')"
ratio_ok="$(awk -v r="$ratio" 'BEGIN { print (r >= 0.9 ? "met" : "NOT met") }')"
added_ok="$(awk -v a="$added" 'BEGIN { print (a <= 1.0 ? "met" : "NOT met") }')"

echo
echo "Medians over $ROUNDS round(s):"
printf '  nginx:   %10.0f requests/s   p99 %8.3f ms   CPU %7.1f us/request\n' "$m_nginx_rps" "$m_nginx_p99" "$m_nginx_cpu"
printf '  gateway: %10.0f requests/s   p99 %8.3f ms   CPU %7.1f us/request\n' "$m_gw_rps" "$m_gw_p99" "$m_gw_cpu"
echo "p99 latency added by the gateway: $added ms (target <= 1 ms: $added_ok)"
echo "throughput ratio target >= 0.9: $ratio_ok"
paced_line=""
if [ "$paced" = 1 ]; then
  m_pn_p99="$(echo "${paced_nginx_p99[*]}" | median)"
  m_pg_p99="$(echo "${paced_gw_p99[*]}" | median)"
  m_pn_p50="$(echo "${paced_nginx_p50[*]}" | median)"
  m_pg_p50="$(echo "${paced_gw_p50[*]}" | median)"
  m_pn_rps="$(echo "${paced_nginx_rps[*]}" | median)"
  m_pg_rps="$(echo "${paced_gw_rps[*]}" | median)"
  paced_added="$(awk -v g="$m_pg_p99" -v n="$m_pn_p99" 'BEGIN { printf "%.3f", g - n }')"
  paced_line="$(printf 'At a paced load (nginx %.0f, gateway %.0f requests/s): p99 nginx %.3f ms, gateway %.3f ms, added %.3f ms; median added %.3f ms' \
    "$m_pn_rps" "$m_pg_rps" "$m_pn_p99" "$m_pg_p99" "$paced_added" "$(awk -v g="$m_pg_p50" -v n="$m_pn_p50" 'BEGIN { print g - n }')")"
  echo "$paced_line"
fi

nginx_version="$("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //')"
wrk_version="$( (wrk --version 2>&1 || true) | head -n 1 | awk '{print $2}')"
echo
echo "Markdown (docs/BENCHMARKS.md):"
echo
cat <<EOF
### Proxy overhead: Tsuzuku gateway vs nginx

$(date -u +%Y-%m-%d), $(nproc) cores, \`bench/proxy/run.sh\`$([ "$smoke" = 1 ] && echo " --smoke"): wrk $wrk_version \`-t $THREADS -c $CONNS\`,
$ROUNDS round(s) of $DURATION s per side (alternating), HTTPS with keep-alive, both in front of the
same nginx upstream answering \`200 ok\` on 127.0.0.1. nginx ($nginx_version) is a plain TLS
reverse proxy with an access log; the gateway checks a session cookie, evaluates a 20-policy
Cedar set and writes an audit event for every request. Medians:

| proxy | requests/s | p99 latency |
| --- | ---: | ---: |
| nginx | $(printf '%.0f' "$m_nginx_rps") | $(printf '%.2f' "$m_nginx_p99") ms |
| Tsuzuku gateway | $(printf '%.0f' "$m_gw_rps") | $(printf '%.2f' "$m_gw_p99") ms |

Throughput ratio gateway/nginx: **$ratio** (target >= 0.9: $ratio_ok). p99 latency added by the
gateway: **$(printf '%.2f' "$added") ms** (target <= 1 ms: $added_ok).
${paced_line:+
$paced_line.}
EOF
echo
echo "gateway/nginx throughput ratio: $ratio"
