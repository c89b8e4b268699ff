#!/usr/bin/env bash
# Load benchmark of upload-gateway against its peers, on loopback (see BENCHMARKS.md).
#
#   benches/load/run.sh             # full run, ~10-15 min on 2 cores
#   QUICK=1 benches/load/run.sh     # ~3 min smoke run
#
# Targets, each pinned to SERVER_CPU (core 0), wrk pinned to CLIENT_CPU (core 1):
#   gateway      target/release/upload-gateway, 1 worker thread, RUST_LOG=warn, full finish path
#   passthrough  target/release/examples/passthrough (bare Pingora, only upstream_peer, 1 thread)
#   nginx        nginx proxy_pass with upstream keepalive, 1 worker, access_log off
#   haproxy      HAProxy (Debian: 2.6) with jwt_verify RS256 + exp/iss/aud checks on every request
# All proxy to one nginx upstream (`return 200 '<documented JSON>'`) pinned to UPSTREAM_CPU
# (core 1 by default, beside wrk, so that core 0 runs only the target under test).
#
# Phases: main (ROUNDS alternating rounds at CONNS connections, cached RS256 token), logging
# (one gateway round with RUST_LOG=info), cold (a different valid token on every request,
# COLD_ROUNDS rounds, gateway restarted before each so its cache starts empty), sweep (every
# target at each of SWEEP connections), optional PROFILE=1 (perf record of the gateway).
# Results: $OUT/load.csv (every run), then benches/load/report.py writes $OUT/summary.md,
# $OUT/summary.json and the SVG charts. Exits non-zero if any target answered non-2xx.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

if [[ "${QUICK:-0}" == 1 ]]; then
  : "${DURATION:=3}" "${ROUNDS:=1}" "${COLD_ROUNDS:=1}" "${SWEEP:=1 32 512}" "${COLD_COUNT:=60000}"
fi
DURATION=${DURATION:-10}          # seconds per wrk run
ROUNDS=${ROUNDS:-5}               # alternating rounds of the main phase
COLD_ROUNDS=${COLD_ROUNDS:-3}     # rounds of the cold-token phase
CONNS=${CONNS:-32}                # connections of the main and cold phases
SWEEP=${SWEEP:-1 8 32 128 512}    # connection counts of the sweep ("" skips it)
SWEEP_DURATION=${SWEEP_DURATION:-$DURATION}
WARMUP=${WARMUP:-2}               # seconds of warm-up per target before the main phase
COLD_COUNT=${COLD_COUNT:-200000}  # distinct tokens for the cold phase
COLD_ALG=${COLD_ALG:-EdDSA}       # EdDSA (fast to mint), RS256 (HAProxy joins) or ES256
# Token-cache memory sweep: for each N, a fresh gateway (verified_cache_capacity = the largest N)
# gets N distinct EdDSA tokens; RSS growth over the warm baseline / cached entries ("" skips).
MEMORY_SWEEP=${MEMORY_SWEEP:-}
LOG_ROUND=${LOG_ROUND:-1}         # 0 skips the RUST_LOG=info round
PROFILE=${PROFILE:-0}             # 1: perf record the gateway during one extra run
PROFILE_TARGET=${PROFILE_TARGET:-gateway}  # which target PROFILE=1 records
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
UPSTREAM_CPU=${UPSTREAM_CPU:-1}
BUILD=${BUILD:-1}                 # 0: reuse the existing release binaries
WORK=${WORK:-/tmp/upload-gateway-load}
# Extra gateway configuration, to measure features that are off by default: lines added to
# [observability] (GATEWAY_OBSERVABILITY='otlp_endpoint = "http://127.0.0.1:4318"') and whole
# sections appended (GATEWAY_EXTRA=$'[rate_limit]\nenabled = true\n...').
# A new folder per run, so a run never overwrites the committed results or an earlier run.
OUT=${OUT:-$ROOT/benches/results/runs/$(date -u +%Y%m%dT%H%M%SZ)-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo nogit)}
TARGETS=${TARGETS:-gateway passthrough nginx haproxy}
REQ_PATH=${REQ_PATH:-/v1/files/uploads/5475f75ce4b084a392305dcb?format=xml&human=true}
ISSUER=https://bench-issuer.example/
AUDIENCE=upload-api
export REQ_PATH

log() { printf '\033[1m[load %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf '\n\033[1;31m======== LOAD BENCHMARK FAILED ========\n%s\n=======================================\033[0m\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------- tools
need=()
for tool in wrk nginx haproxy; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [[ "$PROFILE" == 1 ]] && ! perf --version >/dev/null 2>&1; then need+=(linux-perf); fi
if ((${#need[@]})); then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
for tool in wrk nginx haproxy openssl python3 taskset curl; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
CLK_TCK=$(getconf CLK_TCK)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ---------------------------------------------------------------- build
cd "$ROOT"
if [[ "$BUILD" == 1 ]]; then
  log "release build (lto=fat: several minutes the first time)"
  cargo build --release --bin upload-gateway --example passthrough --example mint_tokens
fi
BIN_DIR=${BIN_DIR:-$ROOT/target/release}   # where the three binaries are (BUILD=0 to use a copy)
GATEWAY=$BIN_DIR/upload-gateway
PASSTHROUGH=$BIN_DIR/examples/passthrough
MINT=$BIN_DIR/examples/mint_tokens
for bin in "$GATEWAY" "$PASSTHROUGH" "$MINT"; do
  [[ -x "$bin" ]] || die "$bin is missing: run with BUILD=1"
done

# ---------------------------------------------------------------- keys and tokens
rm -rf "$WORK"
mkdir -p "$WORK/tmp" "$OUT"
log "RSA key (openssl), JWKS and tokens ($COLD_COUNT cold $COLD_ALG tokens)"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/rsa.pem" 2>/dev/null
openssl pkey -in "$WORK/rsa.pem" -pubout -out "$WORK/rsa_pub.pem"
"$MINT" --rsa-key "$WORK/rsa.pem" --out-dir "$WORK" --issuer "$ISSUER" --audience "$AUDIENCE" \
  --cold-count "$COLD_COUNT" --cold-alg "$COLD_ALG"
TOKEN=$(head -n1 "$WORK/token.txt")

# ---------------------------------------------------------------- configs
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_UP=$(free_port); P_GW=$(free_port); P_ADMIN=$(free_port); P_PT=$(free_port); P_NG=$(free_port); P_HA=$(free_port)
declare -A PORT=([gateway]=$P_GW [passthrough]=$P_PT [nginx]=$P_NG [haproxy]=$P_HA)

UPSTREAM_JSON='{"upload":{"form_post_url":"https://s3-eu-west-1.amazonaws.com/prd-xmc-xvid-s3-eu-west-1/","status":"COMPLETING","nb_chunks":1,"storage_type":"S3","object_key":"uploads/test.mp4","pipeline":{"id":"547f3eede4b025bcbff38657"},"file":{"id":"598358fe6baa605b1e33754e"},"id":"5475f75ce4b084a392305dcb"}}'

nginx_common() { # $1 = name
  cat <<EOF
worker_processes 1;
user root;
pid $WORK/$1.pid;
error_log $WORK/$1.err warn;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path $WORK/tmp/$1-body;
  proxy_temp_path $WORK/tmp/$1-proxy;
  fastcgi_temp_path $WORK/tmp/$1-fastcgi;
  uwsgi_temp_path $WORK/tmp/$1-uwsgi;
  scgi_temp_path $WORK/tmp/$1-scgi;
EOF
}
{
  nginx_common upstream
  cat <<EOF
  server {
    listen 127.0.0.1:$P_UP backlog=4096;
    location / {
      default_type application/json;
      return 200 '$UPSTREAM_JSON';
    }
  }
}
EOF
} >"$WORK/nginx-upstream.conf"
{
  nginx_common proxy
  cat <<EOF
  upstream up {
    server 127.0.0.1:$P_UP;
    keepalive 128;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:$P_NG backlog=4096;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} >"$WORK/nginx-proxy.conf"

cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 8000

defaults
  mode http
  option http-keep-alive
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 300s

frontend fe
  bind 127.0.0.1:$P_HA
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.jwt_alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request deny unless { var(txn.jwt_alg) -m str RS256 }
  http-request deny unless { var(txn.bearer),jwt_verify(txn.jwt_alg,"$WORK/rsa_pub.pem") -m int 1 }
  http-request set-var(txn.now) date
  http-request deny if { var(txn.bearer),jwt_payload_query('\$.exp','int'),sub(txn.now) -m int lt 0 }
  http-request deny unless { var(txn.bearer),jwt_payload_query('\$.iss') -m str $ISSUER }
  http-request deny unless { var(txn.bearer),jwt_payload_query('\$.aud') -m str $AUDIENCE }
  default_backend be

backend be
  http-reuse always
  server up 127.0.0.1:$P_UP
EOF

cat >"$WORK/gateway.toml" <<EOF
[server]
listen = ["127.0.0.1:$P_GW"]
threads = 1
shutdown_grace_s = 1

[upstream]
servers = ["127.0.0.1:$P_UP"]
${GATEWAY_POOL:+keepalive_pool_size = $GATEWAY_POOL}

[api]
path_prefix = "/v1"

[auth]
jwks_file = "$WORK/jwks.json"
issuer = "$ISSUER"
audiences = ["$AUDIENCE"]
algorithms = ["RS256", "ES256", "EdDSA"]

[observability]
admin_listen = "127.0.0.1:$P_ADMIN"
log_format = "json"
${GATEWAY_OBSERVABILITY:-}

${GATEWAY_EXTRA:-}
EOF
"$GATEWAY" check --config "$WORK/gateway.toml" >/dev/null 2>"$WORK/check.err" || die "gateway config refused: $(cat "$WORK/check.err")"

# ---------------------------------------------------------------- servers
declare -A PID=()
UP_PID=
cleanup() {
  local p
  for p in "${PID[@]}" $UP_PID; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'cleanup; exit 143' INT TERM

wait_port() { # $1 port, $2 name
  local i
  for i in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$2 did not listen on 127.0.0.1:$1"
}

start_gateway() { # $1 = RUST_LOG level
  if [[ -n "${PID[gateway]:-}" ]]; then
    kill "${PID[gateway]}" 2>/dev/null || true
    wait "${PID[gateway]}" 2>/dev/null || true
  fi
  RUST_LOG=$1 taskset -c "$SERVER_CPU" "$GATEWAY" --config "${GW_CONF:-$WORK/gateway.toml}" 2>>"$WORK/gateway-$1.log" &
  PID[gateway]=$!
  wait_port "$P_GW" gateway
  local i
  for i in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$P_ADMIN/readyz" >/dev/null && return 0
    sleep 0.1
  done
  die "gateway not ready: $(tail -5 "$WORK/gateway-$1.log")"
}

log "starting upstream nginx (cpu $UPSTREAM_CPU) and the targets (cpu $SERVER_CPU)"
taskset -c "$UPSTREAM_CPU" nginx -e "$WORK/upstream.err" -c "$WORK/nginx-upstream.conf" -g 'daemon off;' &
UP_PID=$!
wait_port "$P_UP" "upstream nginx"
for t in $TARGETS; do
  case $t in
    gateway) start_gateway warn ;;
    passthrough)
      taskset -c "$SERVER_CPU" "$PASSTHROUGH" --listen "127.0.0.1:$P_PT" --upstream "127.0.0.1:$P_UP" 2>"$WORK/passthrough.log" &
      PID[passthrough]=$! ;;
    nginx)
      taskset -c "$SERVER_CPU" nginx -e "$WORK/proxy.err" -c "$WORK/nginx-proxy.conf" -g 'daemon off;' &
      PID[nginx]=$! ;;
    haproxy)
      taskset -c "$SERVER_CPU" haproxy -db -f "$WORK/haproxy.cfg" 2>"$WORK/haproxy.log" &
      PID[haproxy]=$! ;;
    *) die "unknown target $t" ;;
  esac
  wait_port "${PORT[$t]}" "$t"
done

# The process and its children (nginx's master and worker).
pids_of() { local p=$1; echo "$p $(pgrep -P "$p" | tr '\n' ' ')"; }
cpu_ticks() { # sum of utime+stime of the pids
  local sum=0 p f
  for p in "$@"; do
    [[ -r /proc/$p/stat ]] || continue
    f=$(sed 's/^.*) //' "/proc/$p/stat")
    sum=$((sum + $(awk '{print $12 + $13}' <<<"$f")))
  done
  echo "$sum"
}

core_ticks() { # "busy total" jiffies of one cpu from /proc/stat
  awk -v c="cpu$1" '$1 == c {b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6}' /proc/stat
}
busy_between() { # fraction of a core busy between two core_ticks samples
  awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); d = y[2] - x[2]; printf "%.2f", (d > 0 ? (y[1] - x[1]) / d : 0)}'
}
# Other engineers' builds and tests share this machine: before each run, wait (up to QUIET_MAX
# seconds) until the whole machine is idle (< 15 % of one core busy over one second).
QUIET_MAX=${QUIET_MAX:-900}
wait_quiet() {
  local waited=0 a b busy
  while :; do
    a="$(core_ticks 0) $(core_ticks 1)"; sleep 1; b="$(core_ticks 0) $(core_ticks 1)"
    busy=$(awk -v a="$a" -v b="$b" 'BEGIN {split(a, x, " "); split(b, y, " ");
      printf "%d", 100 * ((y[1] - x[1]) + (y[3] - x[3])) / ((y[2] - x[2] + y[4] - x[4]) / 2)}')
    ((busy < 15)) && break
    ((waited == 0)) && log "machine busy ($busy % of a core): waiting for it to go quiet"
    waited=$((waited + 1))
    if ((waited >= QUIET_MAX)); then
      log "WARNING: still busy after ${QUIET_MAX}s, measuring anyway"
      QUIET_NOTE="machine busy ($busy %)"
      return 0
    fi
  done
  QUIET_NOTE=
  ((waited == 0)) || log "quiet after ${waited}s"
}

smoke() { # $1 target: one request by curl, must be 200 (the gateway's must be the XML document)
  local t=$1 code ctype
  code=$(curl -s -o "$WORK/smoke-$t.body" -D "$WORK/smoke-$t.headers" -w '%{http_code}' -X PUT \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    --data '{"upload":{"nb_chunks":1}}' "http://127.0.0.1:${PORT[$t]}$REQ_PATH")
  [[ "$code" == 200 ]] || die "$t answered $code to the smoke request: $(head -c 300 "$WORK/smoke-$t.body")"
  if [[ $t == gateway && "$REQ_PATH" == *format=xml* ]]; then
    ctype=$(grep -i '^content-type:' "$WORK/smoke-$t.headers" | tr -d '\r')
    [[ "$ctype" == *application/xml* ]] && grep -q '<status>COMPLETING</status>' "$WORK/smoke-$t.body" ||
      die "gateway did not render the XML document: $ctype $(head -c 300 "$WORK/smoke-$t.body")"
  fi
}

to_us() { # wrk latency ("812.00us", "1.23ms", "2.00s") -> microseconds
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
    else if (v ~ /m$/) { sub(/m$/, "", v); print v * 60000000 }
    else { sub(/s$/, "", v); print v * 1000000 } }'
}

token_cache() { # "hits misses allocations" from the gateway's metrics (allocations: -1 unless
  # the binary was built with --features alloc-count)
  curl -fs "http://127.0.0.1:$P_ADMIN/metrics" | awk '
    BEGIN { a = -1 }
    /^upload_gateway_token_cache_lookups_total/ { if ($0 ~ /hit/) h += $NF; else if ($0 ~ /miss/) m += $NF }
    /^upload_gateway_allocations_total / { a = $NF }
    END { printf "%d %d %d\n", h, m, a }'
}

CSV=$OUT/load.csv
echo "phase,target,round,conns,duration_s,requests,rps,p50_us,p75_us,p90_us,p99_us,cpu_us_per_req,cpu_util,upstream_cpu_us_per_req,server_core_busy,client_core_busy,non2xx,socket_errors,note" >"$CSV"

# run PHASE TARGET ROUND CONNS DURATION SCRIPT [NOTE]
run() {
  local phase=$1 t=$2 round=$3 conns=$4 dur=$5 script=$6 note=${7:-}
  local pids raw c0 c1 u0 u1 t0 t1 hm0 hm1 s0 s1 k0 k1
  wait_quiet
  [[ -n "$QUIET_NOTE" ]] && note="${note:+$note; }$QUIET_NOTE"
  pids=$(pids_of "${PID[$t]}")
  raw=$WORK/wrk-$phase-$t-$round-c$conns.txt
  [[ $t == gateway ]] && hm0=$(token_cache)
  s0=$(core_ticks "$SERVER_CPU"); k0=$(core_ticks "$CLIENT_CPU")
  c0=$(cpu_ticks $pids); u0=$(cpu_ticks $(pids_of "$UP_PID")); t0=$(date +%s.%N)
  TOKEN_FILE=$WORK/token.txt TOKENS_FILE=$WORK/cold_tokens.txt \
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" -d"${dur}s" --latency -s "$HERE/$script" \
    "http://127.0.0.1:${PORT[$t]}" >"$raw" 2>&1 || die "wrk failed against $t: $(cat "$raw")"
  t1=$(date +%s.%N); c1=$(cpu_ticks $pids); u1=$(cpu_ticks $(pids_of "$UP_PID"))
  s1=$(core_ticks "$SERVER_CPU"); k1=$(core_ticks "$CLIENT_CPU")
  if [[ $t == gateway ]]; then
    hm1=$(token_cache)
    read -r h0 m0 a0 <<<"$hm0"; read -r h1 m1 a1 <<<"$hm1"
    note="${note:+$note; }token cache hits $((h1 - h0)) misses $((m1 - m0))"
  fi
  local requests rps p50 p75 p90 p99 non2xx errs wraps
  requests=$(awk '/requests in/ {print $1; exit}' "$raw")
  rps=$(awk '/^Requests\/sec:/ {print $2; exit}' "$raw")
  p50=$(to_us "$(awk '$1 == "50%" {print $2; exit}' "$raw")")
  p75=$(to_us "$(awk '$1 == "75%" {print $2; exit}' "$raw")")
  p90=$(to_us "$(awk '$1 == "90%" {print $2; exit}' "$raw")")
  p99=$(to_us "$(awk '$1 == "99%" {print $2; exit}' "$raw")")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF; exit}' "$raw"); non2xx=${non2xx:-0}
  errs=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10; exit}' "$raw"); errs=${errs:-0}
  wraps=$(awk '/token list wrapped/ {print $(NF-1); exit}' "$raw")
  [[ -n "$wraps" && "$wraps" != 0 ]] && note="${note:+$note; }token list wrapped ${wraps}x"
  [[ -n "$requests" && -n "$rps" && "$requests" -gt 0 ]] || die "no requests completed against $t: $(cat "$raw")"
  if [[ $t == gateway && "${a0:--1}" -ge 0 ]]; then
    note="${note:+$note; }allocations per request $(awk -v d=$((a1 - a0)) -v n="$requests" 'BEGIN {printf "%.1f", d / n}')"
  fi
  local cpu_us util up_us
  cpu_us=$(awk -v d=$((c1 - c0)) -v n="$requests" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", d * 1e6 / hz / n}')
  util=$(awk -v d=$((c1 - c0)) -v s="$t0" -v e="$t1" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", d / hz / (e - s)}')
  up_us=$(awk -v d=$((u1 - u0)) -v n="$requests" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", d * 1e6 / hz / n}')
  local sbusy cbusy
  sbusy=$(busy_between "$s0" "$s1"); cbusy=$(busy_between "$k0" "$k1")
  echo "$phase,$t,$round,$conns,$dur,$requests,$rps,$p50,$p75,$p90,$p99,$cpu_us,$util,$up_us,$sbusy,$cbusy,$non2xx,$errs,$note" >>"$CSV"
  printf '  %-8s %-12s r%-2s c=%-4s %10s req/s  p50 %8sus  p99 %8sus  cpu %7sus/req (%s core; cores busy %s/%s)  %s\n' \
    "$phase" "$t" "$round" "$conns" "$rps" "$p50" "$p99" "$cpu_us" "$util" "$sbusy" "$cbusy" "$note" >&2
  if [[ "$non2xx" != 0 ]]; then
    die "$t answered $non2xx non-2xx responses ($phase, round $round, c=$conns): see $raw"
  fi
  ((errs == 0)) || log "WARNING: $t had $errs socket errors ($phase, round $round, c=$conns)"
}

rotate() { # $1 = round: the target list rotated so that no target always runs first
  local -a ts=($TARGETS)
  local n=${#ts[@]} k=$(($1 % ${#ts[@]})) i
  for ((i = 0; i < n; i++)); do printf '%s ' "${ts[$(((i + k) % n))]}"; done
}

for t in $TARGETS; do smoke "$t"; done
log "smoke requests OK; warm-up ${WARMUP}s per target"
for t in $TARGETS; do
  TOKEN_FILE=$WORK/token.txt taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s "$HERE/put.lua" \
    "http://127.0.0.1:${PORT[$t]}" >/dev/null 2>&1
done

log "main phase: $ROUNDS round(s) x {$TARGETS} x ${DURATION}s at c=$CONNS"
for r in $(seq 1 "$ROUNDS"); do
  for t in $(rotate "$r"); do run main "$t" "$r" "$CONNS" "$DURATION" put.lua; done
done

if [[ "$LOG_ROUND" == 1 && " $TARGETS " == *" gateway "* ]]; then
  log "logging phase: the gateway with RUST_LOG=info (access log to a file)"
  start_gateway info
  smoke gateway
  run logging gateway 1 "$CONNS" "$DURATION" put.lua "RUST_LOG=info"
  log "access log: $(wc -l <"$WORK/gateway-info.log") lines, $(du -h "$WORK/gateway-info.log" | cut -f1)"
  start_gateway warn
  smoke gateway
fi

if ((COLD_ROUNDS > 0)); then
  log "cold phase: $COLD_ROUNDS round(s), a different $COLD_ALG token per request, c=$CONNS"
  for r in $(seq 1 "$COLD_ROUNDS"); do
    # HAProxy verifies RS256 only (its jwt_verify is configured for the RSA key): with RS256
    # cold tokens both verify every request.
    cold_targets="gateway passthrough"
    [[ "$COLD_ALG" == RS256 ]] && cold_targets="$cold_targets haproxy"
    for t in $cold_targets; do
      [[ " $TARGETS " == *" $t "* ]] || continue
      if [[ $t == gateway ]]; then start_gateway warn; smoke gateway; fi
      run cold "$t" "$r" "$CONNS" "$DURATION" cold.lua "$COLD_ALG"
    done
  done
  # Leave the gateway with a fresh cache, then re-warm with the cached token.
  start_gateway warn
  smoke gateway
fi

if [[ -n "$SWEEP" ]]; then
  log "sweep: c in {$SWEEP} x {$TARGETS} x ${SWEEP_DURATION}s"
  for c in $SWEEP; do
    for t in $(rotate "$c"); do run sweep "$t" 1 "$c" "$SWEEP_DURATION" put.lua; done
  done
fi

if [[ -n "$MEMORY_SWEEP" && " $TARGETS " == *" gateway "* ]]; then
  mem_max=$(tr ' ' '\n' <<<"$MEMORY_SWEEP" | sort -n | tail -n1)
  log "memory sweep: {$MEMORY_SWEEP} distinct tokens (minting $mem_max EdDSA tokens)"
  mkdir -p "$WORK/mem"
  "$MINT" --rsa-key "$WORK/rsa.pem" --out-dir "$WORK/mem" --issuer "$ISSUER" --audience "$AUDIENCE" \
    --cold-count "$mem_max" --cold-alg EdDSA >/dev/null
  # The minting made a new EdDSA key: the gateway reads that run's key set (same RSA key).
  sed -e "s/^\[auth\]$/[auth]\nverified_cache_capacity = $mem_max/" \
    -e "s|^jwks_file = .*|jwks_file = \"$WORK/mem/jwks.json\"|" "$WORK/gateway.toml" >"$WORK/gateway-mem.toml"
  echo "tokens,cached_entries,rss_warm_kib,rss_after_kib,bytes_per_entry,seconds" >"$OUT/memory.csv"
  rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/${PID[gateway]}/status"; }
  entries() { curl -fs "http://127.0.0.1:$P_ADMIN/metrics" | awk '/^upload_gateway_token_cache_entries / {print $NF}'; }
  for n in $MEMORY_SWEEP; do
    GW_CONF=$WORK/gateway-mem.toml start_gateway warn
    smoke gateway
    # Warm: connections, buffers and pools at their working size, with the one cached token.
    TOKEN_FILE=$WORK/token.txt taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d2s -s "$HERE/put.lua" \
      "http://127.0.0.1:$P_GW" >/dev/null 2>&1
    warm=$(rss_kib)
    head -n "$n" "$WORK/mem/cold_tokens.txt" >"$WORK/mem/tokens-$n.txt"
    t0=$(date +%s)
    # Until every token has been cached once (bounded: 20 minutes).
    before=0
    while (( $(entries) < n - 1 && $(date +%s) - t0 < 1200 )); do
      # Each run starts where the cache stands: a run covers only so many tokens.
      TOKENS_START=$(( $(entries) + 1 )) TOKENS_FILE=$WORK/mem/tokens-$n.txt \
        taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d5s \
        -s "$HERE/cold.lua" "http://127.0.0.1:$P_GW" >/dev/null 2>&1
      now=$(entries)
      # Eviction may hold the cache just under N: 90 % is enough; no growth below that is a fault.
      ((now > before)) || { ((now * 10 >= n * 9)) && break; die "memory sweep: the cache stopped growing at $now entries (tokens refused?)"; }
      before=$now
    done
    after=$(rss_kib); cached=$(entries)
    echo "$n,$cached,$warm,$after,$(( (after - warm) * 1024 / (cached > 0 ? cached : 1) )),$(( $(date +%s) - t0 ))" >>"$OUT/memory.csv"
    log "memory: $n tokens -> $cached cached, RSS $warm -> $after KiB, $(( (after - warm) * 1024 / (cached > 0 ? cached : 1) )) bytes/entry"
  done
  start_gateway warn
  smoke gateway
fi

if [[ "$PROFILE" == 1 && " $TARGETS " == *" $PROFILE_TARGET "* ]]; then
  log "profile: perf record -g of $PROFILE_TARGET during one ${DURATION}s run"
  # Rust release builds have no frame pointers: unwind with DWARF CFI (.eh_frame).
  perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "${PID[$PROFILE_TARGET]}" -o "$WORK/perf.data" \
    -- sleep "$((DURATION + 1))" >"$WORK/perf-record.log" 2>&1 &
  perf_pid=$!
  sleep 0.5
  run profile "$PROFILE_TARGET" 1 "$CONNS" "$DURATION" put.lua "under perf"
  wait "$perf_pid" || log "perf record failed: $(cat "$WORK/perf-record.log")"
  squeeze() { grep -v '^#' | grep -v '^$' | sed 's/ \{2,\}/ /g; s/ - - *$//'; }
  {
    echo "## samples by object (self)"
    perf report -i "$WORK/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | squeeze | head -8
    echo "## hottest symbols (self time)"
    perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null | squeeze | head -60
    echo "## gateway code and its libraries (children = inclusive, self)"
    perf report -i "$WORK/perf.data" --children --sort symbol --stdio -g none 2>/dev/null | squeeze |
      grep -E 'upload_gateway|tracing|serde_json|quick_cache|prometheus|regex|quick_xml|jsonwebtoken' | head -60
  } >"$OUT/perf-$PROFILE_TARGET.txt" || true
  log "perf report: $OUT/perf-$PROFILE_TARGET.txt"
  if command -v strace >/dev/null; then
    log "profile: system calls per request (strace -c, 4 s each, not a throughput measurement)"
    : >"$OUT/syscalls.txt"
    for t in gateway passthrough; do
      [[ " $TARGETS " == *" $t "* ]] || continue
      timeout 7 strace -c -f -p "${PID[$t]}" -o "$WORK/strace-$t.txt" 2>/dev/null &
      strace_pid=$!
      sleep 1
      TOKEN_FILE=$WORK/token.txt taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d4s -s "$HERE/put.lua" \
        "http://127.0.0.1:${PORT[$t]}" >"$WORK/wrk-strace-$t.txt" 2>&1
      wait "$strace_pid" || true
      n=$(awk '/requests in/ {print $1; exit}' "$WORK/wrk-strace-$t.txt")
      awk -v t="$t" -v n="$n" '$NF ~ /^(sendto|recvfrom|writev|write|read|epoll_wait|getpeername|sendmsg|recvmsg)$/ {
        calls = $4; printf "%s %s %.2f per request\n", t, $NF, calls / n }' \
        "$WORK/strace-$t.txt" >>"$OUT/syscalls.txt"
    done
  fi
fi

{
  echo "nproc=$(nproc)"
  echo "cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "kernel=$(uname -r)"
  echo "wrk=$(wrk --version 2>&1 | head -n1)"
  echo "nginx=$(nginx -v 2>&1)"
  echo "haproxy=$(haproxy -v | head -n1)"
  echo "duration_s=$DURATION rounds=$ROUNDS cold_rounds=$COLD_ROUNDS conns=$CONNS sweep=$SWEEP cold_alg=$COLD_ALG cold_count=$COLD_COUNT"
  echo "pinning: targets cpu $SERVER_CPU, wrk cpu $CLIENT_CPU, upstream nginx cpu $UPSTREAM_CPU"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$OUT/machine.txt"

log "report"
python3 "$HERE/report.py" "$OUT"
log "done: $OUT/summary.md"
