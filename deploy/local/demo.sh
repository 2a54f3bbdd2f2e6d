#!/usr/bin/env bash
# demo.sh — the insurance demo end to end on the local stack: brings the stack up, runs
# `outflow run`, produces a few dozen quote and enrollment events plus one malformed record, and
# prints the entity states from Mongo, the `entity-updates` records and the dead letter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
eval "$(deploy/local/stack.sh up)"
echo "== building outflow" >&2
cargo build -q --bin outflow
# where cargo put it: CARGO_TARGET_DIR when set (relative paths count from here, as for cargo)
OUTFLOW="${CARGO_TARGET_DIR:-$ROOT/target}/debug/outflow"
RUN_DIR="${OUTFLOW_LOCAL_RUN:-$ROOT/deploy/local/.run}"
mkdir -p "$RUN_DIR"
"$OUTFLOW" validate topology.toml >&2

echo "== starting outflow run (log: $RUN_DIR/demo-outflow.log)" >&2
"$OUTFLOW" run topology.toml >"$RUN_DIR/demo-outflow.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT

RUN="d$(date +%s)"   # ids unique to this demo run
NOW="$(date +%s)000"
echo "== producing demo events (run $RUN)" >&2
for i in $(seq 1 12); do
  echo "{\"eventId\":\"$RUN-qr-$i\",\"quoteId\":\"$RUN-q$i\",\"customerId\":\"cust-$((i % 5))\",\"product\":\"$( [ $((i % 2)) = 0 ] && echo HOME || echo AUTO )\",\"coverageAmount\":$((i * 10000)).0,\"requestedAt\":$NOW}"
done | "$OUTFLOW" produce quote-events --type QuoteRequested >/dev/null
for i in $(seq 1 8); do
  echo "{\"eventId\":\"$RUN-qp-$i\",\"quoteId\":\"$RUN-q$i\",\"premium\":$((i * 37)).5,\"validUntil\":$NOW,\"pricedAt\":$NOW}"
done | "$OUTFLOW" produce quote-events --type QuotePriced >/dev/null
for i in $(seq 1 6); do
  echo "{\"eventId\":\"$RUN-ei-$i\",\"enrollmentId\":\"$RUN-e$i\",\"quoteId\":\"$RUN-q$i\",\"customerId\":\"cust-$((i % 5))\",\"startDate\":20500,\"initiatedAt\":$NOW}"
done | "$OUTFLOW" produce enrollment-events --type EnrollmentInitiated >/dev/null
for i in $(seq 1 4); do
  outcome=APPROVED; policy="\"P-$RUN-$i\""; [ "$i" = 4 ] && { outcome=DECLINED; policy=null; }
  echo "{\"eventId\":\"$RUN-ec-$i\",\"enrollmentId\":\"$RUN-e$i\",\"policyNumber\":$policy,\"outcome\":\"$outcome\",\"completedAt\":$NOW}"
done | "$OUTFLOW" produce enrollment-events --type EnrollmentCompleted >/dev/null
echo '{"quoteId": "not avro at all"}' | "$OUTFLOW" produce quote-events --raw --key "$RUN-poison" >/dev/null
echo "== produced 30 events and 1 malformed record; waiting for the pipeline" >&2

PY="${OUTFLOW_LOCAL_CACHE:-$ROOT/deploy/local/.cache}/mongo/venv/bin/python"
for _ in $(seq 1 60); do
  n=$("$PY" - "$OUTFLOW_MONGO_URI" "$RUN" <<'PY'
import sys, pymongo
db = pymongo.MongoClient(sys.argv[1]).outflow_insurance
print(db.event_log.count_documents({"_id": {"$regex": "^" + sys.argv[2]}}))
PY
)
  [ "$n" -ge 30 ] && break
  sleep 0.5
done

echo
echo "== entity states in Mongo (database outflow_insurance)"
"$PY" - "$OUTFLOW_MONGO_URI" "$RUN" <<'PY'
import sys, json, pymongo
db = pymongo.MongoClient(sys.argv[1]).outflow_insurance
for kind in ("quote", "enrollment"):
    for d in db[kind].find({"_id": {"$regex": "^" + sys.argv[2]}}).sort("_id"):
        s = d["state"]
        extra = f"premium={s.get('premium')}" if kind == "quote" else f"policy={s.get('policyNumber')}"
        print(f"  {kind:<10} {d['_id']:<16} v{d['version']}  {s['status']:<10} {extra}")
print(f"  event log: {db.event_log.count_documents({'_id': {'$regex': '^' + sys.argv[2]}})} events of this run")
PY
echo
echo "== entity-updates (read_committed, decoded from Avro), first 5 of this run"
"$OUTFLOW" tail entity-updates --from-beginning --idle-timeout 3 | grep "\"$RUN-" | head -5 | cut -c1-300 || true
echo
echo "== the dead letter on quote-events.dlq"
"$OUTFLOW" tail quote-events.dlq --from-beginning --idle-timeout 3 --key "$RUN-poison"
