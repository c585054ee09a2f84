#!/usr/bin/env bash
# make bench: runs every benchmark scenario, several runs per figure, prints
# one table and writes results/benchmarks.md and results/benchmarks.png.
#
# Scenarios (docs/benchmarks.md explains each):
#   1  crdt-benchmarks B3 map scenarios through its harness definitions: JS
#      client (merge in memory; apply to IndexedDB, fake-indexeddb and
#      Chromium), Go core, Yjs (V2), Automerge, TinyBase
#   2  server apply throughput per store, beside the store's own ceiling
#      (Redis: EVALSHA of a script of the merge script's shape and SET,
#      both redis-benchmark -P 16, in the same run; server and Redis CPU
#      per field change)
#   3  WebSocket fan-out latency, 1,000 and 10,000 subscribers, store reads and CPU per delivery
#      (server and generator), each row beside the issue's target; the
#      floor of the same fan-outs (one send(2) per subscriber, no server);
#      as root, the same rows again with loopback receives steered to the
#      generator's core
#   4  initial sync of 100,000 records into Chromium's IndexedDB; put with
#      10 live queries and putMany beside raw IndexedDB (live.mjs)
#   5  server memory per idle WebSocket, client heap for 100,000 records
#   6  the DynamoDB store at scale: 8 pushers over 2 store instances against
#      1 pusher, the store against raw TransactWriteItems of the same shape,
#      streams off and on; with streams on every side of every row on an
#      emulator started fresh for it (scripts/ddb-private.sh), since DynamoDB
#      Local's cost per streamed write grows with its stream history
# A scenario whose prerequisites are missing (a service, Chromium) is
# skipped with a line saying why; the others still run. The server under
# test is the server command (cmd/convergo serve under convergo-bench's
# benchLimits: the per-address limits lifted, every load generator being one
# address); the browser scenarios use `convergo-bench serve`, the same engine
# and transport with a seeded store and the JS client mounted.
#
# Environment: BENCH_RUNS (runs per figure, default 7), BENCH_ONLY (space-
# separated scenario numbers), and the services' variables that
# scripts/services.sh prints (it is started here when present).
set -uo pipefail

# The body is one function, read whole before it runs, so editing this file
# during a run cannot derail it.
main() {

	cd "$(dirname "$0")/.."
	ROOT=$PWD
	RUNS=${BENCH_RUNS:-7}
	ONLY=" ${BENCH_ONLY:-1 2 3 4 5 6} "
	RAW=results/raw
	BIN=$ROOT/bin
	start=$(date +%s)

	mkdir -p "$RAW" "$BIN"
	rm -f "$RAW"/*.jsonl "$RAW"/*.log "$RAW"/profiles/*.pprof

	log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
	want() { [[ $ONLY == *" $1 "* ]]; }
	# Packets dropped by full receive backlogs, all CPUs (/proc/net/softnet_stat, second column, hexadecimal).
	softnet_drops() { local n=0 d; while read -r _ d _; do n=$((n + 16#$d)); done </proc/net/softnet_stat; echo "$n"; }

	# Every run has a hard budget so make bench ends within 30 minutes.
	run() { # run NAME SECONDS CMD... : stdout to results/raw/NAME.jsonl, stderr to NAME.log
		local name=$1 budget=$2
		shift 2
		log "$name: $*"
		if ! timeout --kill-after=10 "$budget" "$@" >"$RAW/$name.jsonl" 2>"$RAW/$name.log"; then
			log "$name: FAILED or timed out (see $RAW/$name.log): $(tail -n 3 "$RAW/$name.log" | tr '\n' ' ')"
		fi
	}

	if [[ -f scripts/services.sh ]]; then
		if out=$(bash scripts/services.sh up 2>"$RAW/services.log"); then
			eval "$out"
		else
			log "services.sh up failed; scenarios needing Redis/DynamoDB/Chromium will skip (see $RAW/services.log)"
		fi
	fi

	log "building"
	go build -o "$BIN/convergo-bench" ./cmd/convergo-bench || exit 1
	# The server command under test; without it the scenarios run its engine
	# and transport inside `convergo-bench serve` instead.
	SERVER=()
	if go build -o "$BIN/convergo" ./cmd/convergo 2>"$RAW/build-server.log"; then
		SERVER=(-server "$BIN/convergo")
	else
		log "cmd/convergo did not build (see $RAW/build-server.log): measuring the engine and transport in process"
	fi
	local embedded=bolt
	[[ ${#SERVER[@]} -gt 0 ]] || embedded=memory
	# (again when the lock file changed since the last install)
	if [[ scripts/bench/js/package-lock.json -nt scripts/bench/js/node_modules/.package-lock.json ]]; then
		log "installing the JS peers pinned in scripts/bench/js/package-lock.json"
		(cd scripts/bench/js && npm ci --no-audit --no-fund >"$ROOT/$RAW/npm.log" 2>&1) || log "npm ci failed (see $RAW/npm.log)"
	fi

	# Scenario 1: crdt-benchmarks B3. Every run of every implementation is a
	# fresh process (1,540 documents built, one cold timed run, 5 warm), so
	# it takes half as many runs as the other figures; samples are written as
	# runs finish, so a run cut short by its budget keeps those done.
	if want 1; then
		local b3runs=$(((RUNS + 1) / 2)) b3warm=5
		run s1-b3-go 120 "$BIN/convergo-bench" b3 -runs "$b3runs" -warm "$b3warm"
		# The live push rows' session ages and the rows' names are the Go
		# bench's (b3SessionAge, b3Rows).
		run s1-b3-js 900 env CONVERGO_CHROMIUM="${CONVERGO_CHROMIUM:-/usr/bin/chromium}" CONVERGO_B3_SESSION_AGE="$("$BIN/convergo-bench" b3 -session-age)" \
			CONVERGO_B3_ROWS="$("$BIN/convergo-bench" b3 -rows -warm "$b3warm")" node scripts/bench/js/b3.mjs "$b3runs" "$b3warm"
	fi

	# Scenario 2: apply throughput per store, beside the store's ceiling.
	if want 2; then
		run s2-apply-$embedded 150 "$BIN/convergo-bench" apply "${SERVER[@]}" -runs "$RUNS" -stores $embedded
		if [[ -n ${CONVERGO_REDIS_ADDR:-} ]]; then
			# Like with like (when taskset exists): Redis alone on core 1 in
			# the apply runs and the ceilings; the server and the load
			# generator, and redis-benchmark in their place, on core 0.
			# The run prints where each side ran.
			local pin2=() rpid='' rcpus=''
			if command -v taskset >/dev/null; then
				pin2=(env BENCH_SERVER_CPUS=0 taskset -c 0)
				case $CONVERGO_REDIS_ADDR in 127.0.0.1:* | localhost:*) # a Redis on this machine
					rpid=$(redis-cli -u "redis://$CONVERGO_REDIS_ADDR" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p') ;;
				esac
				if [[ -n $rpid ]] && rcpus=$(taskset -p -c "$rpid" 2>/dev/null | sed 's/.*: //'); then
					taskset -p -c 1 "$rpid" >/dev/null || rcpus=""
				fi
			fi
			run s2-apply-redis 300 "${pin2[@]}" "$BIN/convergo-bench" apply "${SERVER[@]}" -runs "$RUNS" -stores redis
			if [[ -n $rcpus ]]; then taskset -p -c "$rcpus" "$rpid" >/dev/null; fi
		else
			log "apply on Redis skipped: CONVERGO_REDIS_ADDR is not set"
		fi
		if [[ -n ${CONVERGO_DYNAMODB_ENDPOINT:-} ]]; then
			run s2-apply-dynamodb 240 "$BIN/convergo-bench" apply "${SERVER[@]}" -runs "$RUNS" -stores dynamodb
		else
			log "apply on DynamoDB skipped: CONVERGO_DYNAMODB_ENDPOINT is not set"
		fi
	fi

	# Scenario 3: fan-out latency.
	if want 3; then
		# Server on core 0, load generator on core 1 (when taskset exists);
		# the in-process server (no -server) also counts store reads.
		ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
		local pin=()
		command -v taskset >/dev/null && pin=(env BENCH_SERVER_CPUS=0 taskset -c 1)
		run s3-fanout 240 "${pin[@]}" "$BIN/convergo-bench" fanout "${SERVER[@]}" -runs "$(((RUNS + 1) / 2))"
		# The bench's own server also writes a CPU profile per run
		# (results/raw/profiles; go tool pprof -top bin/convergo-bench FILE).
		run s3-fanout-reads 240 "${pin[@]}" "$BIN/convergo-bench" fanout -stores memory -runs 5 -cpuprofile "$RAW/profiles"
		run s3-fanout-10k 420 "${pin[@]}" "$BIN/convergo-bench" fanout -stores memory -subs 10000 -writes 25 -interval 200ms -runs 5 -cpuprofile "$RAW/profiles"
		# The floor of the same fan-outs on this machine: one send(2) per
		# subscriber from the server's core, no server. Both ends of every
		# connection are in one process, so the 10,000 row has 9,990 under
		# a 20,000-descriptor limit.
		run s3-fanfloor 90 "${pin[@]}" "$BIN/convergo-bench" fanfloor -runs 5 -writes 30
		run s3-fanfloor-10k 120 "${pin[@]}" "$BIN/convergo-bench" fanfloor -subs 9990 -writes 25 -interval 200ms -runs 5
		# The same rows again with loopback receives processed on the
		# generator's core (receive packet steering): by default the kernel
		# runs a loopback receiver's TCP work in the sender's context, so the
		# server's core also pays its subscribers' receive processing, which
		# remote clients' machines would. Their titles say so; both sets
		# are reported. Needs root (the sysfs file), restored afterwards.
		# Steered segments wait in the generator core's backlog, which
		# drops what is beyond net.core.netdev_max_backlog (1,000 by
		# default): a push to 10,000 subscribers overran it and the
		# dropped segments arrived a retransmission later (hundreds of
		# ms), so the backlog is raised for these rows too. The drops
		# (/proc/net/softnet_stat) are logged.
		local rps=/sys/class/net/lo/queues/rx-0/rps_cpus backlog=/proc/sys/net/core/netdev_max_backlog
		if ((${#pin[@]})) && [[ -w $rps ]]; then
			local rps_was backlog_was drops0
			rps_was=$(<"$rps")
			backlog_was=$(<"$backlog")
			trap "echo '$rps_was' >'$rps'; echo '$backlog_was' >'$backlog'" EXIT
			echo 2 >"$rps"
			echo 30000 >"$backlog" || log "could not raise $backlog: steered rows may lose segments"
			drops0=$(softnet_drops)
			run s3-rps-fanout 240 "${pin[@]}" "$BIN/convergo-bench" fanout "${SERVER[@]}" -runs "$(((RUNS + 1) / 2))"
			run s3-rps-fanout-10k 420 "${pin[@]}" "$BIN/convergo-bench" fanout -stores memory -subs 10000 -writes 25 -interval 200ms -runs 5
			run s3-rps-fanfloor 90 "${pin[@]}" "$BIN/convergo-bench" fanfloor -runs 5 -writes 30
			run s3-rps-fanfloor-10k 120 "${pin[@]}" "$BIN/convergo-bench" fanfloor -subs 9990 -writes 25 -interval 200ms -runs 5
			log "steered rows: $(($(softnet_drops) - drops0)) segments dropped by full receive backlogs"
			echo "$rps_was" >"$rps"
			echo "$backlog_was" >"$backlog"
			trap - EXIT
		else
			log "fan-out with steered loopback receives skipped: needs taskset and a writable $rps"
		fi
	fi

	# Scenario 4 and the client half of 5: Chromium.
	if want 4 || want 5; then
		if [[ -x ${CONVERGO_CHROMIUM:-/usr/bin/chromium} ]]; then
			run s4-browser 560 node scripts/bench/js/browser.mjs "$BIN/convergo-bench" "${CONVERGO_CHROMIUM:-/usr/bin/chromium}" 3
			run s4-live 240 node scripts/bench/js/live.mjs "${CONVERGO_CHROMIUM:-/usr/bin/chromium}" "$RUNS"
		else
			log "browser scenarios skipped: no Chromium (set CONVERGO_CHROMIUM)"
		fi
	fi

	# Scenario 5, server half: memory per idle WebSocket.
	if want 5; then
		ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
		run s5-conns 200 "$BIN/convergo-bench" conns "${SERVER[@]}" -runs 2
	fi

	# Scenario 6: the DynamoDB store at scale, on private emulators (never the
	# shared one, whose stream history grows with every test run). Streams
	# off: one fresh emulator for all rows. Streams on: a fresh emulator per
	# side of every row, each warmed up on a table without a stream.
	if want 6; then
		if [[ -f scripts/ddb-private.sh ]] && command -v java >/dev/null; then
			local r6=${BENCH_DDB_RUNS:-3} ddb=("$BIN/convergo-bench" ddbstore -collections 1 -dur 3s -warmup 2s)
			fresh() { # fresh NAME BUDGET CMD...: run on an emulator started for it
				(
					eval "$(bash scripts/ddb-private.sh start 2>>"$RAW/ddb-private.log")" || { log "$1: no private DynamoDB Local (see $RAW/ddb-private.log)"; exit; }
					run "$@"
					bash scripts/ddb-private.sh stop 2>>"$RAW/ddb-private.log"
				)
			}
			fresh s6-ddb-off 300 "${ddb[@]}" -pushers 1,8 -batches 1,10,100 -runs "$r6"
			fresh s6-ddb-off-8c 120 "$BIN/convergo-bench" ddbstore -pushers 8 -collections 8 -batches 1,10,100 -dur 3s -warmup 2s
			# The streamed rows stop starting after 10 minutes in all (their
			# runs are about 9 s each), so that make bench keeps its bound.
			local r b p side s6end=$((SECONDS + 600))
			for ((r = 1; r <= r6; r++)); do
				for b in 1 10 100; do
					for p in 1 8; do
						for side in store raw; do
							if ((SECONDS >= s6end)); then
								log "s6-ddb-on: 10-minute budget reached before run $r, batch $b, $p pushers, $side"
								break 4
							fi
							fresh "s6-ddb-on-$r-$b-$p-$side" 60 "${ddb[@]}" -stream -pushers "$p" -batches "$b" -side "$side"
						done
					done
				done
			done
		else
			log "DynamoDB at scale skipped: java or scripts/ddb-private.sh missing"
		fi
	fi

	wall=$(($(date +%s) - start))
	"$BIN/convergo-bench" report -in "$RAW" -out results -command "make bench (BENCH_RUNS=$RUNS)" -wall "${wall}s" || exit 1

	# The chart: SVG rendered to PNG by headless Chromium (no image libraries
	# needed in the module).
	CHROME=${CONVERGO_CHROMIUM:-/usr/bin/chromium}
	if [[ -x $CHROME ]]; then
		profile=$(mktemp -d)
		height=$(grep -o 'height="[0-9]*"' results/benchmarks.svg | head -n 1 | tr -dc 0-9)
		timeout 60 "$CHROME" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
			--disable-background-networking --disable-component-update --disable-sync \
			--user-data-dir="$profile" --hide-scrollbars --window-size="1100,$height" \
			--screenshot="$ROOT/results/benchmarks.png" "file://$ROOT/results/benchmarks.svg" >/dev/null 2>&1 ||
			log "chart: Chromium could not render results/benchmarks.png; results/benchmarks.svg has it"
		rm -rf "$profile"
	else
		log "chart: no Chromium; results/benchmarks.svg has the chart"
	fi
	log "done in ${wall}s: results/benchmarks.md, results/benchmarks.png"
}

main "$@"; exit
