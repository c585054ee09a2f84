#!/usr/bin/env bash
# Starts, checks and stops the services Convergo's integration tests run
# against: Redis (single node on 6379 and a 3-master cluster on 7001-7003),
# AWS's DynamoDB Local (from the npm package amplify-dynamodb-simulator, on
# 8765) and Debian's Chromium. Nothing here is a mock.
#
#   scripts/services.sh up      start what is not running; print export lines
#   scripts/services.sh down    stop what `up` started (never a service it found)
#   scripts/services.sh status  say what answers
#
# Use it as: eval "$(bash scripts/services.sh up)"
# Everything but the export lines goes to stderr. State (pids, data, the
# unpacked DynamoDB Local) lives in $CONVERGO_SVC_DIR (/tmp/convergo-svc).
set -euo pipefail

SVC_DIR=${CONVERGO_SVC_DIR:-/tmp/convergo-svc}
REDIS_PORT=${CONVERGO_REDIS_PORT:-6379}
CLUSTER_PORTS=(${CONVERGO_REDIS_CLUSTER_PORTS:-7001 7002 7003})
DDB_PORT=${CONVERGO_DYNAMODB_PORT:-8765}
DDB_PACKAGE=amplify-dynamodb-simulator@2.9.30
# Processes `up` started are remembered per session, so that `down` in one
# test run never stops what another run (or a developer) started.
PID_DIR="$SVC_DIR/pids/${CONVERGO_SVC_SESSION:-manual}"
mkdir -p "$PID_DIR"

log() { echo "services: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root to run: $*"; fi
}

apt_install() {
	log "installing Debian packages: $*"
	export DEBIAN_FRONTEND=noninteractive
	as_root apt-get install -y -qq --no-install-recommends "$@" >&2 ||
		{ as_root apt-get update -qq >&2 && as_root apt-get install -y -qq --no-install-recommends "$@" >&2; } ||
		die "apt-get install $* failed"
}

# wait_for DESCRIPTION SECONDS COMMAND...: poll until COMMAND succeeds.
wait_for() {
	local what=$1 secs=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || die "$what did not come up within ${secs}s"
		sleep 0.3
	done
}

# started NAME PID: remember that we started a process, so `down` stops it.
started() { echo "$2" >"$PID_DIR/$1"; }

redis_up() { redis-cli -p "$1" ping 2>/dev/null | grep -q PONG; }

ensure_redis_bin() {
	command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
}

start_redis() {
	ensure_redis_bin
	if redis_up "$REDIS_PORT"; then
		log "redis on $REDIS_PORT: running"
		return
	fi
	log "redis on $REDIS_PORT: starting"
	mkdir -p "$SVC_DIR/redis-$REDIS_PORT"
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
		--dir "$SVC_DIR/redis-$REDIS_PORT" --daemonize yes \
		--pidfile "$SVC_DIR/redis-$REDIS_PORT/redis.pid" \
		--logfile "$SVC_DIR/redis-$REDIS_PORT/redis.log" >&2
	wait_for "redis on $REDIS_PORT" 10 redis_up "$REDIS_PORT"
	started "redis-$REDIS_PORT" "$(cat "$SVC_DIR/redis-$REDIS_PORT/redis.pid")"
}

cluster_ok() { redis-cli -p "${CLUSTER_PORTS[0]}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; }

start_cluster() {
	ensure_redis_bin
	if cluster_ok; then
		log "redis cluster on ${CLUSTER_PORTS[*]}: running"
		return
	fi
	log "redis cluster on ${CLUSTER_PORTS[*]}: starting"
	local addrs=()
	for p in "${CLUSTER_PORTS[@]}"; do
		local d="$SVC_DIR/redis-cluster/$p"
		if redis_up "$p"; then
			# A node left over from an earlier, broken start: reset it.
			redis-cli -p "$p" flushall >/dev/null 2>&1 || true
			redis-cli -p "$p" cluster reset hard >/dev/null 2>&1 || true
		else
			rm -rf "$d"
			mkdir -p "$d"
			redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
				--cluster-config-file "$d/nodes.conf" --cluster-node-timeout 5000 \
				--save "" --appendonly no --dir "$d" --daemonize yes \
				--pidfile "$d/redis.pid" --logfile "$d/redis.log" >&2
			wait_for "redis cluster node $p" 10 redis_up "$p"
			started "redis-cluster-$p" "$(cat "$d/redis.pid")"
		fi
		addrs+=("127.0.0.1:$p")
	done
	redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >&2 ||
		die "redis-cli --cluster create failed"
	wait_for "redis cluster state ok" 30 cluster_ok
}

ddb_up() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DDB_PORT" 2>/dev/null | grep -q '^[1-5]'; }

start_dynamodb() {
	if ddb_up; then
		log "dynamodb local on $DDB_PORT: running"
		return
	fi
	command -v java >/dev/null || apt_install openjdk-17-jre-headless
	command -v npm >/dev/null || die "npm is needed to fetch DynamoDB Local (package $DDB_PACKAGE)"
	local emu="$SVC_DIR/dynamodb/package/emulator"
	if [ ! -f "$emu/DynamoDBLocal.jar" ]; then
		log "fetching DynamoDB Local from npm ($DDB_PACKAGE)"
		rm -rf "$SVC_DIR/dynamodb"
		mkdir -p "$SVC_DIR/dynamodb"
		(cd "$SVC_DIR/dynamodb" && npm pack --silent "$DDB_PACKAGE" >&2 && tar xzf amplify-dynamodb-simulator-*.tgz) ||
			die "could not fetch $DDB_PACKAGE"
		[ -f "$emu/DynamoDBLocal.jar" ] || die "$DDB_PACKAGE has no emulator/DynamoDBLocal.jar"
	fi
	log "dynamodb local on $DDB_PORT: starting"
	(cd "$emu" && exec nohup java -Djava.library.path=DynamoDBLocal_lib -jar DynamoDBLocal.jar \
		-inMemory -port "$DDB_PORT" >"$SVC_DIR/dynamodb/dynamodb.log" 2>&1) &
	started dynamodb $!
	wait_for "dynamodb local on $DDB_PORT" 60 ddb_up
}

ensure_chromium() {
	if [ -x /usr/bin/chromium ]; then
		log "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
		return
	fi
	apt_install chromium
	[ -x /usr/bin/chromium ] || die "chromium did not install"
}

up() {
	start_redis
	start_cluster
	start_dynamodb
	ensure_chromium
	local cluster
	cluster=$(printf '127.0.0.1:%s,' "${CLUSTER_PORTS[@]}")
	cat <<EOF
export CONVERGO_REDIS_ADDR=127.0.0.1:$REDIS_PORT
export CONVERGO_REDIS_CLUSTER_ADDRS=${cluster%,}
export CONVERGO_REDIS_SERVER_BIN=$(command -v redis-server)
export CONVERGO_DYNAMODB_ENDPOINT=http://127.0.0.1:$DDB_PORT
export AWS_ACCESS_KEY_ID=\${AWS_ACCESS_KEY_ID:-local}
export AWS_SECRET_ACCESS_KEY=\${AWS_SECRET_ACCESS_KEY:-local}
export AWS_REGION=\${AWS_REGION:-us-east-1}
export CONVERGO_CHROMIUM=/usr/bin/chromium
EOF
}

down() {
	local f
	for f in "$PID_DIR"/*; do
		[ -e "$f" ] || continue
		local pid
		pid=$(cat "$f")
		log "stopping $(basename "$f") (pid $pid)"
		kill "$pid" 2>/dev/null || true
		rm -f "$f"
	done
}

status() {
	redis_up "$REDIS_PORT" && log "redis $REDIS_PORT: up" || log "redis $REDIS_PORT: down"
	cluster_ok && log "redis cluster: ok" || log "redis cluster: down"
	ddb_up && log "dynamodb local $DDB_PORT: up" || log "dynamodb local $DDB_PORT: down"
	[ -x /usr/bin/chromium ] && log "chromium: installed" || log "chromium: missing"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*)
	echo "usage: $0 up|down|status" >&2
	exit 2
	;;
esac
