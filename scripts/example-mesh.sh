#!/usr/bin/env bash
# A small libmesh mesh on this machine, in one command: a seed that also serves the seed
# directory, a relay that admits nodes by their advertisement, and two nodes (alice and
# bob) that know the seed and reserve on the relay. Everything listens on 127.0.0.1.
# Each node has its data dir and config file under DIR (default ./example-mesh);
# the script prints how to talk to each, and Ctrl-C (or SIGTERM) stops them all.
#
#   scripts/example-mesh.sh [DIR]
#
# Environment: MESHD (the binary; default `meshd` on PATH), PORTS (five TCP ports for
# the seed, the relay, alice, bob and the directory; default "4500 4501 4502 4503 4580").
set -euo pipefail

MESHD="${MESHD:-meshd}"
DIR="${1:-example-mesh}"
read -r P_SEED P_RELAY P_ALICE P_BOB P_DIRECTORY <<<"${PORTS:-4500 4501 4502 4503 4580}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

pids=()
stopping=0
stop() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap - INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  status=0
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  echo "example mesh stopped" >&2
  exit "$status"
}
trap stop INT TERM
trap '[ "$stopping" = 1 ] || { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }' EXIT

# A JSON string field of one line of `meshd` output.
field() { grep -o "\"$1\": *\"[^\"]*\"" | head -n 1 | sed 's/.*: *"\(.*\)"/\1/'; }

# The identity of NAME (created on the first run, kept afterwards).
identity() {
  mkdir -p -m 700 "$DIR/$1"
  "$MESHD" --data-dir "$DIR/$1" identity init >/dev/null
  "$MESHD" --data-dir "$DIR/$1" identity show
}

SEED_ID=$(identity seed | field node/id)
RELAY_ID=$(identity relay | field node/id)
RELAY_PEER=$(identity relay | field libp2p/peer-id)
ALICE_ID=$(identity alice | field node/id)
BOB_ID=$(identity bob | field node/id)
RELAY_ADDR="/ip4/127.0.0.1/tcp/$P_RELAY/p2p/$RELAY_PEER"

common() {
  cat <<TOML
listen = ["/ip4/127.0.0.1/tcp/$1"]
bootstrap = "none"
kad_mode = "server"
autonat = false
TOML
}
seeds() {
  cat <<TOML

[[seeds]]
node_id = "$SEED_ID"
addr = "/ip4/127.0.0.1/tcp/$P_SEED"
label = "seed"
TOML
}

{ common "$P_SEED"; echo "directory = \"127.0.0.1:$P_DIRECTORY\""; } >"$DIR/seed/meshd.toml"
{ common "$P_RELAY"; cat <<TOML; seeds; } >"$DIR/relay/meshd.toml"
external = ["/ip4/127.0.0.1/tcp/$P_RELAY"]
relay_server = true

[admission]
policy = "advert"
TOML
for n in alice bob; do
  port=$P_ALICE
  [ "$n" = bob ] && port=$P_BOB
  { common "$port"; echo "relays = [\"$RELAY_ADDR\"]"; seeds; } >"$DIR/$n/meshd.toml"
done

# Starts NAME and waits for its ready line.
start() {
  local name=$1
  "$MESHD" --data-dir "$DIR/$name" run --config "$DIR/$name/meshd.toml" \
    >"$DIR/$name/ready.json" 2>"$DIR/$name/meshd.log" &
  pids+=("$!")
  for _ in $(seq 1 150); do
    grep -q '"node/id"' "$DIR/$name/ready.json" 2>/dev/null && return 0
    kill -0 "$!" 2>/dev/null || { echo "$name failed to start; see $DIR/$name/meshd.log" >&2; tail -n 5 "$DIR/$name/meshd.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "$name did not start within 30 s; see $DIR/$name/meshd.log" >&2
  exit 1
}

start seed
start relay
start alice
start bob

cat <<TEXT
example mesh running in $DIR (Ctrl-C stops it)

  seed   $SEED_ID
         /ip4/127.0.0.1/tcp/$P_SEED, seed directory http://127.0.0.1:$P_DIRECTORY
  relay  $RELAY_ID
         $RELAY_ADDR (admission policy: advert)
  alice  $ALICE_ID
         /ip4/127.0.0.1/tcp/$P_ALICE
  bob    $BOB_ID
         /ip4/127.0.0.1/tcp/$P_BOB

Try:
  $MESHD --data-dir $DIR/alice status
  $MESHD --data-dir $DIR/alice connect $BOB_ID
  $MESHD --data-dir $DIR/alice marker send $BOB_ID hello
  $MESHD --data-dir $DIR/relay relay grants
  curl 'http://127.0.0.1:$P_DIRECTORY/adv?since=0'
Logs: $DIR/*/meshd.log
TEXT
echo "ready"

# Until Ctrl-C, or until a node stops on its own.
while true; do
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "a node stopped; stopping the others" >&2; stop; }
  done
  sleep 1 &
  wait $! || true
done
