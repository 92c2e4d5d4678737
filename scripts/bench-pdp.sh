#!/usr/bin/env bash
# bench-pdp.sh compares the Gatehouse PDP with a stock OPA server on
# loopback: the same signed bundle (policies/), the same 1,000 seeded
# questions, closed-loop load from services/pdp/cmd/pdpload. It checks that
# both servers give the expected answer to every question, then runs each
# configuration REPS times, interleaved, and prints a Markdown report of
# the medians (docs/benchmarks.md explains the method and the numbers).
#
# Configurations: opa (stock OPA server, the go.mod version); pdp-memory
# (-store memory); pdp-memory-nocache (-cache-size 0); pdp-postgres (policy
# store and decision log in a Postgres container, the production path),
# also over h2c as the gateway calls it; and BatchCheck of 100 against
# 100 single Checks. All over HTTP/1.1 unless named h2c.
#
# Knobs (environment, defaults in parentheses):
#   DURATION (20s) WARMUP (5s) REPS (3) WORKERS (16) INPUTS (1000) SEED (1)
#   BATCH_WORKERS ("1 4")  concurrencies of the batch comparison ("" skips it)
#   PIN (1)                servers on CPU 1, load generator and Postgres on
#                          CPU 0; 0 leaves scheduling to the kernel
#   POSTGRES (1)           run the Postgres configurations
#   QUIET_CPU (0.2)        cores of other work tolerated: before a repetition
#                          the script waits (up to QUIET_WAIT, 600 s) for the
#                          machine to be this quiet, and a run in which other
#                          work used more is repeated (up to ATTEMPTS, 4) and
#                          left out of the report
#   POLICY_DIR (policies)  the signed bundle directory, copied at the start
#                          so that edits during the run change nothing
#   OUT (a new /tmp/bench-pdp.* directory) PDP_PORT (18081) OPA_PORT (18181)
#   PG_PORT (18543)        Postgres's port on the host's loopback
#   GATEHOUSE_POSTGRES_IMAGE (gatehouse/postgres:local)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-5s}
REPS=${REPS:-3}
WORKERS=${WORKERS:-16}
BATCH_WORKERS=${BATCH_WORKERS-1 4}
INPUTS=${INPUTS:-1000}
SEED=${SEED:-1}
PIN=${PIN:-1}
POSTGRES=${POSTGRES:-1}
QUIET_CPU=${QUIET_CPU:-0.2}
ATTEMPTS=${ATTEMPTS:-4}
QUIET_WAIT=${QUIET_WAIT:-600}
PDP_PORT=${PDP_PORT:-18081}
PG_PORT=${PG_PORT:-18543}
OPA_PORT=${OPA_PORT:-18181}
POSTGRES_IMAGE=${GATEHOUSE_POSTGRES_IMAGE:-gatehouse/postgres:local}
OUT=${OUT:-$(mktemp -d /tmp/bench-pdp.XXXXXX)}
POLICY_DIR=${POLICY_DIR:-policies}
mkdir -p "$OUT"

key=deploy/policy-signing/demo.pub.pem
key_id=gatehouse-demo
db_password=bench

log() { printf 'bench-pdp: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

work=$(mktemp -d /tmp/bench-pdp-work.XXXXXX)
server_pid=""
load_pid=""
container=""
cleanup() {
	local pid
	for pid in $load_pid $server_pid; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [[ -n $container ]]; then
		docker rm -f -v "$container" >/dev/null 2>&1 || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
# An interrupted or timed-out benchmark still stops what it started.
trap 'exit 130' INT
trap 'exit 143' TERM

# Servers on one CPU, the load generator (and Postgres, which in production
# runs elsewhere) on the other; taskset execs, so $! is the server's pid.
server_cpu=() client_cpu=() pg_cpu=()
if [[ $PIN == 1 ]]; then
	server_cpu=(taskset -c 1) client_cpu=(taskset -c 0) pg_cpu=(--cpuset-cpus 0)
fi

# ---- versions: the OPA server must be the go.mod version ----
make -s "$root/bin/opa"
opa_version=v$(bin/opa version | sed -n 's/^Version: //p')
mod_version=$(cd services/pdp && go list -m -f '{{.Version}}' github.com/open-policy-agent/opa)
make_version=$(sed -n 's/^OPA_VERSION *:= *//p' Makefile)
[[ $opa_version == "$mod_version" && $make_version == "$mod_version" ]] ||
	die "bin/opa is $opa_version, go.mod has $mod_version, the Makefile $make_version: run make tools"
log "OPA $opa_version (bin/opa = go.mod = Makefile OPA_VERSION)"

# ---- build ----
go build -o "$work/pdp" ./services/pdp/cmd/pdp
go build -o "$work/pdpload" ./services/pdp/cmd/pdpload
policies=$work/policies
cp -R "$POLICY_DIR" "$policies"
bundle_flags=(-policy-dir "$policies" -bundle-verification-key "$key" -bundle-verification-key-id "$key_id")
# The PDP's verified bundle (the policy directory without tests and
# testdata, with its .signatures.json) as a tarball: OPA verifies it with
# the same key and key id.
"$work/pdpload" bundle -o "$work/bundle.tar.gz" "${bundle_flags[@]}" ||
	die "$POLICY_DIR is not a correctly signed bundle (make generate re-signs policies/)"

wait_http() { # url
	for _ in $(seq 200); do
		curl -fs -o /dev/null "$1" && return 0
		kill -0 "$server_pid" 2>/dev/null || die "the server exited; see $OUT/server.log"
		sleep 0.05
	done
	die "$1 did not answer"
}

start_opa() {
	"${server_cpu[@]}" bin/opa run --server --addr "127.0.0.1:$OPA_PORT" \
		--bundle --verification-key "$key" --verification-key-id "$key_id" \
		--skip-version-check --log-level error "$work/bundle.tar.gz" >>"$OUT/server.log" 2>&1 &
	server_pid=$!
	wait_http "http://127.0.0.1:$OPA_PORT/health"
}

start_pdp() { # extra pdp flags...
	"${server_cpu[@]}" "$work/pdp" -http-addr "127.0.0.1:$PDP_PORT" "${bundle_flags[@]}" "$@" >>"$OUT/server.log" 2>&1 &
	server_pid=$!
	wait_http "http://127.0.0.1:$PDP_PORT/readyz"
}

stop_server() {
	kill "$server_pid"
	wait "$server_pid" || true
	server_pid=""
}

# Busy CPU (cores) of the whole machine over 3 s.
machine_busy() {
	local a b
	a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
	sleep 3
	b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
	awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN{split(a,x," ");split(b,y," ");printf "%.2f", (y[1]-x[1])/((y[1]-x[1])+(y[2]-x[2]))*n}'
}

wait_quiet() {
	local busy deadline=$((SECONDS + QUIET_WAIT))
	while :; do
		busy=$(machine_busy)
		if awk -v b="$busy" -v q="$QUIET_CPU" 'BEGIN{exit !(b < q)}'; then
			log "machine quiet: ${busy} cores busy; load average $(cut -d' ' -f1-3 /proc/loadavg)"
			return
		fi
		if ((SECONDS >= deadline)); then
			log "WARNING: machine still busy (${busy} cores) after ${QUIET_WAIT}s; measuring anyway (see other CPU in the report)"
			return
		fi
		log "machine busy (${busy} cores, load $(cut -d' ' -f1 /proc/loadavg)); waiting"
		sleep 10
	done
}

# bench LABEL MODE START... -- PDPLOAD-FLAGS...: starts a fresh server with
# START, runs the load, stops the server. A run that other work on the
# machine spoilt (pdpload exit status 3) is repeated once the machine is
# quiet again, up to ATTEMPTS times. A run that fails (wrong answers, too
# many errors) is reported and the benchmark goes on; the script fails at
# the end.
results=() failed=()
bench() {
	local label=$1 mode=$2 out rc attempt start=()
	shift 2
	while [[ $1 != -- ]]; do start+=("$1"); shift; done
	shift
	out=$(printf '%s/%03d-%s-%s.json' "$OUT" "${#results[@]}" "$label" "$mode")
	for attempt in $(seq "$ATTEMPTS"); do
		rc=0
		"${start[@]}"
		# In the background, so that a signal need not wait for the run.
		"${client_cpu[@]}" "$work/pdpload" run -label "$label" -mode "$mode" \
			-inputs "$INPUTS" -seed "$SEED" -warmup "$WARMUP" -duration "$DURATION" "${bundle_flags[@]}" \
			-server-pid "$server_pid" -max-other-cores "$QUIET_CPU" -out "$out" "$@" > >(tee -a "$OUT/runs.log") 2>&1 &
		load_pid=$!
		wait "$load_pid" || rc=$?
		load_pid=""
		stop_server
		((rc == 3 && attempt < ATTEMPTS)) || break
		log "$label $mode: other work spoilt the run (attempt $attempt); repeating"
		wait_quiet
	done
	[[ -f $out ]] && results+=("$out")
	if ((rc == 3)); then
		log "$label $mode (repetition $rep): the machine never stayed quiet; the report leaves the run out"
	elif ((rc != 0)); then
		failed+=("$label $mode (repetition $rep)")
		log "FAILED: $label $mode (repetition $rep); see $OUT/runs.log"
	fi
}

start_pdp_postgres() { # a fresh database each time, as the first replica finds it
	psql_db -c 'DROP DATABASE pdp WITH (FORCE)' -c 'CREATE DATABASE pdp'
	start_pdp -store postgres -database-url "$dsn"
}

pdp_url=http://127.0.0.1:$PDP_PORT
opa_url=http://127.0.0.1:$OPA_PORT
pdp_metrics=(-metrics-url "$pdp_url/metrics")

# ---- Postgres (the production path: policy store and decision log) ----
dsn=""
db_cpu=()
if [[ $POSTGRES == 1 ]]; then
	container=gatehouse-bench-pg-$$
	# On the host's network, listening on loopback only: the PDP reaches it
	# the way the load generator reaches the PDP. Through a published port
	# every byte of the decision log would pass docker-proxy (a userland
	# copy, on either core), and through the bridge, the bridge's and
	# netfilter's work for each packet would land on the server's core
	# (15-20 µs of it per decision, measured); neither is the PDP's.
	docker run -d --name "$container" "${pg_cpu[@]}" -e POSTGRES_PASSWORD="$db_password" -e PGPORT="$PG_PORT" \
		--network host \
		-v "$root/deploy/postgres/initdb/01-databases.sql:/docker-entrypoint-initdb.d/01-databases.sql:ro" \
		"$POSTGRES_IMAGE" -c listen_addresses=127.0.0.1 -c port="$PG_PORT" >/dev/null
	psql_db() { docker exec -e PGPASSWORD="$db_password" "$container" psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
	for _ in $(seq 600); do psql_db -d pdp -c 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
	psql_db -d pdp -c 'select 1' >/dev/null || die "Postgres did not start"
	dsn="postgres://postgres:$db_password@127.0.0.1:$PG_PORT/pdp?sslmode=disable"
	id=$(docker inspect -f '{{.Id}}' "$container")
	for f in "/sys/fs/cgroup/cpuacct/docker/$id/cpuacct.usage" "/sys/fs/cgroup/system.slice/docker-$id.scope/cpu.stat"; do
		[[ -r $f ]] && db_cpu=(-db-cpu-file "$f") && break
	done
	log "Postgres $(psql_db -d pdp -c 'show server_version') in $POSTGRES_IMAGE (fsync on, defaults)"
fi

# ---- the answers must be right before they are fast ----
start_opa
opa_pid=$server_pid
start_pdp -store memory
"$work/pdpload" verify -pdp-url "$pdp_url" -opa-url "$opa_url" -inputs "$INPUTS" -seed "$SEED" "${bundle_flags[@]}" | tee "$OUT/verify.log"
stop_server
server_pid=$opa_pid
stop_server

{
	echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), $(uname -r), $(go version | cut -d' ' -f3)"
	echo "pinning: $([[ $PIN == 1 ]] && echo 'servers on CPU 1; load generator and Postgres on CPU 0' || echo none)"
	echo "policy bundle: $POLICY_DIR, revision $(sed -n 's/.*"revision": *"\([^"]*\)".*/\1/p' "$policies/.manifest")"
	echo "workers $WORKERS (batch modes $BATCH_WORKERS), warm-up $WARMUP, measured $DURATION, $REPS repetitions, $INPUTS inputs, seed $SEED"
} | tee "$OUT/setup.txt" >&2

for rep in $(seq "$REPS"); do
	wait_quiet
	log "repetition $rep of $REPS"
	bench opa opa start_opa -- -url "$opa_url" -workers "$WORKERS"
	bench pdp-memory pdp-check start_pdp -store memory -- -url "$pdp_url" -workers "$WORKERS" "${pdp_metrics[@]}"
	bench pdp-memory-nocache pdp-check start_pdp -store memory -cache-size 0 -- -url "$pdp_url" -workers "$WORKERS" "${pdp_metrics[@]}"
	if [[ $POSTGRES == 1 ]]; then
		bench pdp-postgres pdp-check start_pdp_postgres -- -url "$pdp_url" -workers "$WORKERS" "${pdp_metrics[@]}" "${db_cpu[@]}"
		log "decision log rows in Postgres after a graceful stop: $(psql_db -d pdp -c "select count(*) from audit_events where type = 'decision'")"
		# The transport the gateway and the invoice service use: h2c.
		bench pdp-postgres-h2c pdp-check start_pdp_postgres -- -url "$pdp_url" -workers "$WORKERS" -h2c "${pdp_metrics[@]}" "${db_cpu[@]}"
	fi
	# BatchCheck of 100 against the same 100 items as single Checks, with
	# the cache and (one worker) without it.
	for w in $BATCH_WORKERS; do
		for mode in pdp-batch pdp-singles; do
			bench pdp-memory "$mode" start_pdp -store memory -- -url "$pdp_url" -workers "$w" "${pdp_metrics[@]}"
		done
	done
	for mode in pdp-batch pdp-singles; do
		bench pdp-memory-nocache "$mode" start_pdp -store memory -cache-size 0 -- -url "$pdp_url" -workers 1 "${pdp_metrics[@]}"
	done
done

"$work/pdpload" report -max-other-cores "$QUIET_CPU" "${results[@]}" | tee "$OUT/report.md"
log "results in $OUT (report.md, runs.log, verify.log, setup.txt, server.log, one JSON per run)"
if ((${#failed[@]} > 0)); then
	printf 'bench-pdp: failed run: %s\n' "${failed[@]}" >&2
	exit 1
fi
