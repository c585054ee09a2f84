#!/usr/bin/env bash
# Starts and stops a private, freshly started DynamoDB Local on a free port,
# for benchmarks and for tests that must not share the emulator's stream
# history: DynamoDB Local's cost per streamed write grows with every stream
# record it has ever kept (docs/benchmarks.md, "DynamoDB"), so a figure
# taken on the shared emulator of scripts/services.sh measures its past.
#
#   scripts/ddb-private.sh start   start one; print export lines (endpoint, pid)
#   scripts/ddb-private.sh stop    stop the one named by CONVERGO_DDB_PRIVATE_PID
#
# Use it as:
#   eval "$(bash scripts/ddb-private.sh start)"
#   ... CONVERGO_DYNAMODB_ENDPOINT points at the private emulator ...
#   bash scripts/ddb-private.sh stop
#
# The emulator is the one scripts/services.sh unpacks (fetched the same way
# when missing). Everything but the export lines goes to stderr.
set -euo pipefail

SVC_DIR=${CONVERGO_SVC_DIR:-/tmp/convergo-svc}
DDB_PACKAGE=amplify-dynamodb-simulator@2.9.30
EMU="$SVC_DIR/dynamodb/package/emulator"

log() { echo "ddb-private: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
	command -v java >/dev/null || die "java is needed (scripts/services.sh up installs it)"
	if [ ! -f "$EMU/DynamoDBLocal.jar" ]; then
		command -v npm >/dev/null || die "npm is needed to fetch DynamoDB Local ($DDB_PACKAGE)"
		log "fetching DynamoDB Local from npm ($DDB_PACKAGE)"
		mkdir -p "$SVC_DIR/dynamodb"
		(cd "$SVC_DIR/dynamodb" && npm pack --silent "$DDB_PACKAGE" >&2 && tar xzf amplify-dynamodb-simulator-*.tgz) ||
			die "could not fetch $DDB_PACKAGE"
	fi
	local port dir
	port=$(free_port)
	dir=$(mktemp -d "${TMPDIR:-/tmp}/convergo-ddb-private.XXXXXX")
	(cd "$EMU" && exec java -Djava.library.path=DynamoDBLocal_lib -jar DynamoDBLocal.jar \
		-inMemory -port "$port" >"$dir/dynamodb.log" 2>&1) &
	local pid=$!
	local deadline=$((SECONDS + 180))
	until curl -s -o /dev/null "http://127.0.0.1:$port"; do
		kill -0 "$pid" 2>/dev/null || die "DynamoDB Local exited; see $dir/dynamodb.log"
		[ $SECONDS -lt $deadline ] || { kill "$pid"; die "DynamoDB Local did not answer on $port within 180s"; }
		sleep 0.3
	done
	log "DynamoDB Local on $port (pid $pid, log $dir/dynamodb.log)"
	cat <<EOT
export CONVERGO_DYNAMODB_ENDPOINT=http://127.0.0.1:$port
export CONVERGO_DDB_PRIVATE_PID=$pid
export AWS_ACCESS_KEY_ID=\${AWS_ACCESS_KEY_ID:-local}
export AWS_SECRET_ACCESS_KEY=\${AWS_SECRET_ACCESS_KEY:-local}
export AWS_REGION=\${AWS_REGION:-us-east-1}
EOT
}

stop() {
	local pid=${CONVERGO_DDB_PRIVATE_PID:-${1:-}}
	[ -n "$pid" ] || die "CONVERGO_DDB_PRIVATE_PID is not set"
	# Only a DynamoDB Local this script started: check the command line.
	if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q DynamoDBLocal.jar; then
		kill "$pid"
		log "stopped pid $pid"
	else
		log "pid $pid is not a DynamoDB Local; left alone"
	fi
}

case "${1:-}" in
start) start ;;
stop) shift; stop "$@" ;;
*)
	echo "usage: $0 start|stop" >&2
	exit 2
	;;
esac
