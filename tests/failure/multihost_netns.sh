#!/usr/bin/env bash
# A training job across two "hosts" made of network namespaces, then the same job with
# the link between them cut mid-training.
#
#   multihost_netns.sh --build BUILD_DIR --work WORK_DIR
#
# Two namespaces (dinA-PID, dinB-PID) are joined by a veth pair; each end is named din0
# and carries 10.231.77.1/24 resp. .2/24 (private to the namespaces, so the subnet
# cannot collide with anything on the machine). Each namespace gets an /etc/hosts of its
# own (/etc/netns/NS/hosts, bind-mounted by `ip netns exec`) naming both hosts, and every
# process runs in a UTS namespace with that host's name, so messages name the hosts as
# on a real cluster. mpirun runs in host A under launch/din-train --hostfile; Open MPI's
# launch agent (plm_rsh_agent, normally ssh) is a generated script that runs the daemon
# in the namespace of the host it is given. Open MPI's traffic (oob, btl) is kept on the
# veth subnet; the servers bind `ps.interface: "din0"` (ZeroMQ resolves an interface
# name to its address on each host), so each binds its own host's address.
#
#   1. 2 servers + 2 workers, one of each per host, 1 epoch on a few thousand din_gen
#      rows: exit 0, the worker's JSON result line has test_auc, server 0 serves on
#      10.231.77.1 (host A) and server 1 on 10.231.77.2 (host B).
#   2. The same layout with many steps and ps.request_timeout_ms 3000; once worker 0
#      logs training progress, din0 is set down in host B. The job must end non-zero
#      within CUT_DEADLINE seconds with an error naming the unreachable peer (our
#      PsClient timeout names server rank, host and endpoint; Open MPI's lost-daemon
#      report names the host), and no process the test started may be left: none in
#      either namespace (only this script starts processes there), none in mpirun's
#      session.
#
# Measured on a 2-core VM (8 runs): run 1 takes 6-14 s. Run 2 ends one of two ways,
# depending on where worker 0 is at the cut, and every process is gone by the time
# mpirun has exited:
#   - worker 0 waits on server 1: our PsClient error ~3 s after the cut ("TIMEOUT: PULL
#     request #N: no reply within 3000 ms from server 1 (world rank 1, host din-b-PID,
#     lane 0) at tcp://10.231.77.2:PORT; ..."), MPI_Abort, exit 1 19-20 s after the cut
#     (once TCP gives up on the far daemon, see tcp_retries2 below);
#   - worker 0 is inside the workers' dense all-reduce (no timeout): Open MPI's "ORTE
#     has lost communication with a remote daemon ... Remote daemon ... on node
#     din-b-PID" when its oob keepalive gives up, exit 205 11-14 s after the cut (with
#     Open MPI's default keepalive: 500 s).
# Messages of the processes on host B cannot reach mpirun through the cut link.
#
# Exit 77 (ctest skip) when the machine does not allow network namespaces (not root,
# no `ip`/`unshare`, `ip netns add` or veth refused). Namespaces, their veth pair and
# /etc/netns/NS are removed on every exit path; only processes in those namespaces or
# started by this script are killed, by PID.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD=""
WORK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    *) echo "usage: $0 --build BUILD_DIR --work WORK_DIR" >&2; exit 2 ;;
  esac
done
if [ -z "$BUILD" ] || [ -z "$WORK" ]; then
  echo "usage: $0 --build BUILD_DIR --work WORK_DIR" >&2
  exit 2
fi
BUILD="$(cd "$BUILD" && pwd)"
mkdir -p "$WORK" && WORK="$(cd "$WORK" && pwd)"

NS_A="dinA-$$"
NS_B="dinB-$$"
HOST_A="din-a-$$"
HOST_B="din-b-$$"
ADDR_A=10.231.77.1
ADDR_B=10.231.77.2
SUBNET=10.231.77.0/24
IFACE=din0
RUN1_DEADLINE=120    # seconds for the job of step 1
START_DEADLINE=120   # seconds for the job of step 2 to start training
CUT_DEADLINE=60      # seconds after the cut for the job to end
SETTLE=10            # seconds after mpirun's exit for every process to be gone

log() { echo "multihost_netns: $*"; }
skip() { log "SKIP: $*"; exit 77; }
fail() { log "FAIL: $*"; exit 1; }

JOB_PID=""   # the running job's session leader; cleared once it is reaped
JOB_SID=""
created_a=0
created_b=0
created_etc=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$JOB_PID" ]; then
    kill -KILL "$JOB_PID" 2>/dev/null
    wait "$JOB_PID" 2>/dev/null
  fi
  local ns pids
  for ns in "$NS_A" "$NS_B"; do
    # Only this script starts processes in its namespaces.
    mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
    [ ${#pids[@]} -gt 0 ] && kill -KILL "${pids[@]}" 2>/dev/null
  done
  [ $created_a = 1 ] && ip netns delete "$NS_A" 2>/dev/null
  [ $created_b = 1 ] && ip netns delete "$NS_B" 2>/dev/null
  rm -rf "/etc/netns/$NS_A" "/etc/netns/$NS_B"
  [ $created_etc = 1 ] && rmdir /etc/netns 2>/dev/null
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- preconditions ---------------------------------------------------------------------
[ "$(id -u)" = 0 ] || skip "network namespaces need root (uid $(id -u))"
for tool in ip unshare setsid python3; do
  command -v "$tool" >/dev/null || skip "'$tool' is not installed"
done
command -v mpirun >/dev/null || fail "mpirun not found"
for exe in ps/din_ps worker/din_worker tools/din_gen; do
  [ -x "$BUILD/$exe" ] || fail "$BUILD/$exe not built"
done

# ---- two hosts -------------------------------------------------------------------------
err="$(ip netns add "$NS_A" 2>&1)" || skip "ip netns add refused: $err"
created_a=1
err="$(ip netns add "$NS_B" 2>&1)" || skip "ip netns add refused: $err"
created_b=1
# Both ends are created inside their namespaces: nothing appears in the machine's own.
err="$(ip link add "$IFACE" netns "$NS_A" type veth peer name "$IFACE" netns "$NS_B" 2>&1)" ||
  skip "cannot create a veth pair: $err"
for ns_addr in "$NS_A $ADDR_A" "$NS_B $ADDR_B"; do
  read -r ns addr <<< "$ns_addr"
  if ! { ip -n "$ns" addr add "$addr/24" dev "$IFACE" && ip -n "$ns" link set lo up &&
         ip -n "$ns" link set "$IFACE" up; }; then
    fail "cannot configure $IFACE in $ns"
  fi
done
# How long a TCP connection with unacknowledged data survives an unreachable peer (Linux
# default 15 retransmissions, about 15 minutes), per namespace. Open MPI's daemons have
# no timeout of their own: after MPI_Abort, mpirun's kill order to the far daemon sits
# unacknowledged until this gives up, so with the default the job of step 2 outlives
# the cut by about 15 minutes (measured: still running after 60 s, server 1 and its
# daemon alive). 5 retransmissions give up after about 13 s, as a cluster tuned for
# fast failure detection would. The machine's own setting is not touched.
for ns in "$NS_A" "$NS_B"; do
  ip netns exec "$ns" sh -c 'echo 5 > /proc/sys/net/ipv4/tcp_retries2' ||
    fail "cannot set net.ipv4.tcp_retries2 in $ns"
done
[ -d /etc/netns ] || created_etc=1
for ns in "$NS_A" "$NS_B"; do
  mkdir -p "/etc/netns/$ns" || skip "cannot create /etc/netns/$ns"
  printf '127.0.0.1 localhost\n%s %s\n%s %s\n' "$ADDR_A" "$HOST_A" "$ADDR_B" "$HOST_B" \
    > "/etc/netns/$ns/hosts"
done
# Runs a command on a host: in its namespace, under its host name.
on_host() {  # on_host NS HOST COMMAND...
  local ns="$1" host="$2"
  shift 2
  # shellcheck disable=SC2016  # expanded by the inner sh
  ip netns exec "$ns" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$host" "$@"
}
[ "$(on_host "$NS_A" "$HOST_A" getent hosts "$HOST_B" | awk '{print $1}')" = "$ADDR_B" ] ||
  fail "$HOST_B does not resolve to $ADDR_B in $NS_A"

# Open MPI's launch agent: `agent HOST COMMAND...`, as it would call ssh.
AGENT="$WORK/agent.sh"
cat > "$AGENT" <<EOF
#!/bin/sh
# Generated by tests/failure/multihost_netns.sh: runs COMMAND on HOST (a namespace).
host="\$1"; shift
case "\$host" in
  $HOST_A|$ADDR_A) ns=$NS_A; name=$HOST_A ;;
  $HOST_B|$ADDR_B) ns=$NS_B; name=$HOST_B ;;
  *) echo "agent: unknown host \$host" >&2; exit 255 ;;
esac
exec ip netns exec "\$ns" unshare --uts sh -c 'hostname "\$0" && eval "\$1"' "\$name" "\$*"
EOF
chmod +x "$AGENT"
printf '%s slots=2\n%s slots=2\n' "$HOST_A" "$HOST_B" > "$WORK/hostfile"

# ---- data ------------------------------------------------------------------------------
DATA="$WORK/data"
if [ ! -f "$DATA/bayes.json" ]; then
  "$BUILD/tools/din_gen" --out "$DATA" --rows 4000 --test_rows 1000 --users 200 \
    --items 2000 --cates 20 --seed 3 >/dev/null || fail "din_gen failed"
fi

# Starts a job in host A in the background, in a session of its own (JOB_PID, the
# session leader, is also the session id). Logs: WORK/NAME.out (stdout: worker 0's JSON
# line) and WORK/NAME.err. Open MPI's daemons and TCP connections use the veth subnet
# only. Its oob keepalive (default: first probe after 300 s idle, 9 probes 20 s apart)
# is how mpirun learns that a daemon became unreachable; with the defaults a job whose
# link is cut waits about 8 minutes before it ends, so launch/din-train --hostfile
# shortens it to 5 s + 3 probes 2 s apart.
start_job() {  # start_job NAME din-train-args...
  local name="$1"
  shift
  # shellcheck disable=SC2016  # expanded by the inner sh
  setsid ip netns exec "$NS_A" unshare --uts sh -c 'hostname "$0" && exec "$@"' \
    "$HOST_A" env BUILD_DIR="$BUILD" python3 "$ROOT/launch/din-train" \
    --config "$ROOT/launch/configs/quickstart.pbtxt" \
    --train "$DATA/train.tsv" --test "$DATA/test.tsv" \
    --servers 2 --workers 2 --hostfile "$WORK/hostfile" \
    --mpirun-arg=--map-by --mpirun-arg=node \
    --mpirun-arg=--mca --mpirun-arg=plm_rsh_agent --mpirun-arg="$AGENT" \
    --mpirun-arg=--mca --mpirun-arg=oob_tcp_if_include --mpirun-arg="$SUBNET" \
    --mpirun-arg=--mca --mpirun-arg=btl --mpirun-arg=self,vader,tcp \
    --mpirun-arg=--mca --mpirun-arg=btl_tcp_if_include --mpirun-arg="$SUBNET" \
    --set "ps.interface=$IFACE" --set trainer.backend=cpu --set trainer.log_every_seconds=1 \
    "$@" --progress=log > "$WORK/$name.out" 2> "$WORK/$name.err" &
  JOB_PID=$!
  JOB_SID=$JOB_PID
}

# Waits up to SECONDS for the job to end. Returns 1 if it is still running; otherwise
# sets JOB_RC and JOB_SECS (since SINCE, a `date +%s.%N` time).
wait_job() {  # wait_job SECONDS SINCE
  local i
  for ((i = 0; i < $1 * 10; ++i)); do
    if ! kill -0 "$JOB_PID" 2>/dev/null; then
      wait "$JOB_PID"
      JOB_RC=$?
      JOB_PID=""
      JOB_SECS=$(python3 -c "import time; print('%.1f' % (time.time() - $2))")
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Processes this test started that are still there: in the namespaces or in the job's
# session. Prints "PID COMMAND" lines.
leftovers() {
  {
    ip netns pids "$NS_A"
    ip netns pids "$NS_B"
    [ -n "$JOB_SID" ] && ps -eo pid=,sid= | awk -v s="$JOB_SID" '$2 == s { print $1 }'
  } | sort -u | while read -r p; do
    [ -n "$p" ] && echo "$p $(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | cut -c1-100)"
  done
}

wait_no_leftovers() {  # wait_no_leftovers WHAT
  local i left
  for ((i = 0; i < SETTLE * 10; ++i)); do
    left="$(leftovers)"
    [ -z "$left" ] && { SETTLED=$(echo "$i" | awk '{printf "%.1f", $1 / 10}'); return 0; }
    sleep 0.1
  done
  fail "$1: processes left ${SETTLE}s after mpirun ended:
$left"
}

show_tail() { echo "--- $1 (last lines)"; tail -n "${2:-25}" "$1"; echo "---"; }

# ---- 1. a job across both hosts ---------------------------------------------------------
log "hosts $HOST_A ($NS_A, $ADDR_A) and $HOST_B ($NS_B, $ADDR_B), veth $IFACE"
t0=$(date +%s.%N)
start_job run1 --epochs 1 --set ps.request_timeout_ms=30000
wait_job "$RUN1_DEADLINE" "$t0" ||
  { show_tail "$WORK/run1.err" 40; fail "run 1 still running after ${RUN1_DEADLINE}s"; }
[ "$JOB_RC" = 0 ] || { show_tail "$WORK/run1.err" 40; fail "run 1 exited $JOB_RC after ${JOB_SECS}s"; }
python3 - "$WORK/run1.out" <<'PY' || { show_tail "$WORK/run1.err" 40; fail "run 1: no result line with test_auc"; }
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
r = json.loads(lines[-1]) if lines else {}
if "test_auc" not in r:
    sys.exit(1)
print("multihost_netns: run 1 result: test_auc %.4f, %d workers, %d servers"
      % (r["test_auc"], r.get("workers", -1), r.get("servers", -1)))
PY
for rank_host_addr in "0 $HOST_A $ADDR_A" "1 $HOST_B $ADDR_B"; do
  read -r rank host addr <<< "$rank_host_addr"
  grep -q "server $rank on $host serving .* at tcp://$addr:" "$WORK/run1.err" ||
    { show_tail "$WORK/run1.err" 40; fail "run 1: server $rank did not serve on $host at $addr"; }
done
wait_no_leftovers "run 1"
log "run 1: exit 0 in ${JOB_SECS}s, server 0 on $HOST_A at $ADDR_A, server 1 on $HOST_B at $ADDR_B"

# ---- 2. the link is cut mid-training -----------------------------------------------------
start_job run2 --epochs 500 --set data.batch_size=32 --set ps.request_timeout_ms=3000
progress="epoch [0-9]+/500 step"
started=0
for ((i = 0; i < START_DEADLINE * 10; ++i)); do
  kill -0 "$JOB_PID" 2>/dev/null || break
  if grep -qE "$progress" "$WORK/run2.err"; then started=1; break; fi
  sleep 0.1
done
[ $started = 1 ] || { show_tail "$WORK/run2.err" 40; fail "run 2 did not start training"; }
ip -n "$NS_B" link set "$IFACE" down || fail "cannot set $IFACE down in $NS_B"
t_cut=$(date +%s.%N)
log "run 2: training ($(grep -E "$progress" "$WORK/run2.err" | tail -n 1 | grep -oE "$progress [0-9]+")); $IFACE down in $NS_B"
if ! wait_job "$CUT_DEADLINE" "$t_cut"; then
  show_tail "$WORK/run2.err" 40
  log "run 2: still running ${CUT_DEADLINE}s after the cut; processes:"
  leftovers
  fail "run 2 did not end within ${CUT_DEADLINE}s of the cut"
fi
[ "$JOB_RC" != 0 ] || fail "run 2 exited 0 although its link was cut"
# Which error names the peer: our PsClient timeout (when a worker waits on a server
# across the cut), Open MPI's lost daemon (always, once keepalive gives up), or both.
ours="$(grep -E "no reply within 3000 ms from .*($HOST_A|$HOST_B|$ADDR_A|$ADDR_B)" "$WORK/run2.err" |
  head -n 1 | sed 's/^.*failed: //')"
ompi="$(grep -A 4 "ORTE has lost communication with a remote daemon" "$WORK/run2.err" |
  grep -E "Remote daemon: .* on node ($HOST_A|$HOST_B)" | head -n 1 | sed 's/^ *//')"
log "run 2: ended with exit $JOB_RC ${JOB_SECS}s after the cut"
[ -n "$ours" ] && log "run 2: PsClient: $ours"
[ -n "$ompi" ] && log "run 2: Open MPI: ORTE has lost communication with a remote daemon; $ompi"
[ -n "$ours$ompi" ] || { show_tail "$WORK/run2.err" 40; fail "run 2: no error names the unreachable peer"; }
wait_no_leftovers "run 2"
log "run 2: no process left (${SETTLED}s after mpirun ended)"
log "PASS"
