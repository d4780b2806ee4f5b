#!/usr/bin/env bash
# profiles/run.sh: CPU flamegraphs (perf + inferno) and a heap profile (dhat) of the stress workloads
# of `unitsync-benches` (`benches/src/stress.rs`), written next to this script:
#
#   cpu-graph.svg   in-process graph: W1 fan-out with 10k async waiters, W2 10k chain, W3 2 workers
#   cpu-agent.svg   the `unitsync agent` process under 32 churning clients and 2,000 blocked starts
#   cpu-*.txt       where the time goes, as text (categories, hottest frames, our hottest functions)
#   cpu-*.folded.gz the folded stacks, kept so the next run can draw a differential flamegraph
#   cpu-*-diff.svg  (only when a previous cpu-*.folded.gz existed) red = grew, blue = shrank
#   heap-w4.json    dhat profile of W4's 100,000-unit graph (open in dhat's dh_view.html)
#   heap-w4.txt     totals, bytes per unit, and the allocation sites behind them
#
# Usage (from anywhere): bash profiles/run.sh
# Environment: CARGO_TARGET_DIR (default: target), PROFILE_FREQ (sampling Hz, default 999),
# STRESS_SCALE (workload size, default 1), PROFILE_DWARF_STACK (bytes of stack copied per sample,
# default 32768: tokio stacks are deep and 8 KiB truncates them).
#
# Installs what is missing: perf (Debian package linux-perf, needs root) and inferno
# (`cargo install --locked inferno`). Needs python3 for the text summaries. Takes ~1 minute when
# everything is built, with about 15 s of recording; the first build adds a few minutes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$CARGO_TARGET_DIR" in
  /*) target="$CARGO_TARGET_DIR" ;;
  *) target="$root/$CARGO_TARGET_DIR" ;;
esac
bin="$target/release"
freq="${PROFILE_FREQ:-999}"
scale="${STRESS_SCALE:-1}"
stack="${PROFILE_DWARF_STACK:-32768}"
units=100000
export PATH="$HOME/.cargo/bin:$PATH"

work="$(mktemp -d "${TMPDIR:-/tmp}/unitsync-profiles.XXXXXX")"
stress_pid="" perf_pid="" stat_pid="" agent_pid=""
cleanup() {
  # Only what this script started, by pid.
  for pid in $perf_pid $stat_pid $stress_pid $agent_pid; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

started=$SECONDS
log() { printf '[profiles +%3ss] %s\n' "$((SECONDS - started))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools ------------------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is needed for the text summaries"
if ! command -v perf >/dev/null; then
  [ "$(id -u)" = 0 ] || die "perf is missing; install linux-perf (Debian) or your distribution's perf"
  log "installing perf (apt-get install linux-perf)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
fi
if ! perf record -q -o "$work/probe.data" -F 99 -g -- true >"$work/probe.out" 2>&1; then
  cat "$work/probe.out" >&2
  die "perf record does not work here (as non-root: sysctl kernel.perf_event_paranoid=1 or lower)"
fi
# A VM without a PMU has no hardware events: perf would fall back to cpu-clock silently; say so.
if perf stat -x, -e cycles -- true 2>&1 | grep -q 'not supported'; then
  event=cpu-clock
else
  event=cycles
fi
if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
  log "installing inferno (cargo install --locked inferno)"
  cargo install --locked --quiet inferno
fi
log "perf $(perf --version | awk '{print $3}'), event $event at $freq Hz, dwarf unwinding ($stack B)"

# --- build ------------------------------------------------------------------------------------
# [profile.release] has debug = 1: line tables, so inlined frames get names.
log "building release binaries into $target"
cargo build --release --quiet -p unitsync --bin unitsync
cargo build --release --quiet -p unitsync-benches --bin stress
commit="${PROFILE_COMMIT:-$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)}"
when="$(date -u '+%Y-%m-%d %H:%M UTC')"
machine="$(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)"

if [ "$event" = cpu-clock ]; then
  count=(--countname ms --factor 0.000001)
else
  count=(--countname cycles)
fi

# record NAME COMMAND...: perf record of COMMAND and every process it starts.
record() {
  local name=$1
  shift
  log "recording $name: $*"
  timeout 300 perf record -q -e "$event" -F "$freq" -m 16M -g --call-graph "dwarf,$stack" \
    -o "$work/$name.data" -- "$@" >"$work/$name.out" 2>"$work/$name.err" ||
    { cat "$work/$name.err" >&2; die "recording $name failed"; }
  cat "$work/$name.out" >&2
}

# render NAME TITLE ENTRY...: $work/NAME.folded -> NAME.svg (+ NAME-diff.svg against the previous
# run's NAME.folded.gz), stacks trimmed to start at the innermost ENTRY frame (summarize.py trim).
render() {
  local name=$1 title=$2 samples subtitle minwidth entry
  shift 2
  local trim=()
  for entry in "$@"; do trim+=(--entry "$entry"); done
  python3 "$here/summarize.py" trim "$work/$name.folded" "${trim[@]}" >"$work/$name.draw"
  samples=$(awk '{n += $NF} END {printf "%.0f", n}' "$work/$name.folded")
  if [ "$event" = cpu-clock ]; then samples="$((samples / 1000000)) ms of CPU"; else samples="$samples cycles"; fi
  subtitle="perf $event $freq Hz, dwarf stacks, $samples | $commit | $when | $machine"
  subtitle="$subtitle | aqua: Rust crates, orange: Rust std, yellow: libc + kernel"
  for minwidth in 0.01 0.03 0.1; do
    inferno-flamegraph --colors rust --hash --width 1600 --title "$title" --subtitle "$subtitle" \
      "${count[@]}" --minwidth "$minwidth" <"$work/$name.draw" >"$here/$name.svg"
    [ "$(wc -c <"$here/$name.svg")" -lt 1900000 ] && break
  done
  if [ -f "$here/$name.folded.gz" ]; then
    gzip -dc "$here/$name.folded.gz" >"$work/$name.before.folded"
    python3 "$here/summarize.py" trim "$work/$name.before.folded" "${trim[@]}" >"$work/$name.before.draw"
    inferno-diff-folded --normalize "$work/$name.before.draw" "$work/$name.draw" |
      inferno-flamegraph --hash --width 1600 --title "$title: this run against the previous one" \
        --subtitle "widths: this run; red: more time than before, blue: less; $commit, $when" \
        "${count[@]}" --minwidth "$minwidth" >"$here/$name-diff.svg"
    log "wrote $name-diff.svg (this run against the previous $name.folded.gz)"
  fi
  gzip -9n <"$work/$name.folded" >"$here/$name.folded.gz"
  log "wrote $name.svg ($(($(wc -c <"$here/$name.svg") / 1024)) KiB)"
}

# --- CPU: in-process graph --------------------------------------------------------------------
record cpu-graph "$bin/stress" graph --scale "$scale"
perf script -i "$work/cpu-graph.data" 2>/dev/null | inferno-collapse-perf --all >"$work/cpu-graph.folded"
render cpu-graph "unitsync-core in process: W1 fan-out + 10k async waiters, W2 chain, W3 mixed" \
  '^unitsync_benches::stress::graph$' '^unitsync_benches::workloads::MixedWorker::run$'
{
  python3 "$here/summarize.py" folded "$work/cpu-graph.folded" --event "$event" \
    --title "cpu-graph: stress graph --scale $scale ($commit, $when)" \
    --phase "W1 fan-out 10k + async waiters (stress::w1_fanout)=stress::w1_fanout" \
    --phase "W2 chain 10k (stress::w2_chain)=stress::w2_chain" \
    --phase "W3 mixed, 2 worker threads (Mixed::run threads)=workloads::Mixed::run" \
    --phase "dropping each round's graph (Inner::drop; not timed by the benches)=drop_in_place<unitsync_core::graph::Inner>"
  printf '\n## Workload output (wall times are under perf, on a shared machine)\n\n'
  cat "$work/cpu-graph.out"
} >"$here/cpu-graph.txt"

# --- CPU: the agent process -------------------------------------------------------------------
# perf attaches to the running agent (-p) before the load starts: only the agent is recorded, and
# perf starts from the agent's current memory map (recording its start-up through the client's
# fork/exec left libc frames of the agent unwound only sometimes, perf 6.1).
log "recording cpu-agent: $bin/stress agent --scale $scale (perf record -p <agent>)"
"$bin/stress" agent --scale "$scale" --agent-pid-file "$work/agent.pid" --start-when "$work/go" \
  >"$work/cpu-agent.out" 2>"$work/cpu-agent.err" &
stress_pid=$!
for _ in $(seq 1000); do
  [ -s "$work/agent.pid" ] && break
  kill -0 "$stress_pid" 2>/dev/null || break
  sleep 0.01
done
[ -s "$work/agent.pid" ] || { cat "$work/cpu-agent.err" >&2; die "the agent did not start"; }
agent_pid=$(cat "$work/agent.pid")
timeout 300 perf record -q -e "$event" -F "$freq" -m 16M -g --call-graph "dwarf,$stack" \
  -o "$work/cpu-agent.data" -p "$agent_pid" 2>"$work/cpu-agent.perf.err" &
perf_pid=$!
# Syscall counts of the same run, where tracepoints are readable (root, tracefs).
syscalls=$(printf 'syscalls:sys_enter_%s,' recvfrom sendto epoll_wait futex write mprotect madvise \
  accept4 epoll_ctl)
stat_pid=""
if perf stat -e syscalls:sys_enter_recvfrom -- true >/dev/null 2>&1; then
  timeout 300 perf stat -x, -e "${syscalls%,}" -p "$agent_pid" -o "$work/cpu-agent.stat" 2>/dev/null &
  stat_pid=$!
fi
sleep 1 # perf opens its events on every agent thread
touch "$work/go"
wait "$stress_pid" || { cat "$work/cpu-agent.err" >&2; die "stress agent failed"; }
wait "$perf_pid" || true # ends when the agent exits (stopped by stress)
[ -z "$stat_pid" ] || wait "$stat_pid" || true
stress_pid="" perf_pid="" stat_pid="" agent_pid_done="$agent_pid" agent_pid=""
cat "$work/cpu-agent.out" >&2
perf script -i "$work/cpu-agent.data" 2>/dev/null | inferno-collapse-perf --all >"$work/cpu-agent.folded"
render cpu-agent "unitsync agent: 32 clients want/start/complete, then 2,000 blocked starts released" \
  '^tokio::runtime::task::core::Core<T,S>::poll$' \
  '^tokio::runtime::scheduler::multi_thread::worker::Context::run$' '^unitsync::agent::run$'
{
  python3 "$here/summarize.py" folded "$work/cpu-agent.folded" --event "$event" \
    --title "cpu-agent: the agent process (pid $agent_pid_done) under stress agent --scale $scale ($commit, $when)" \
    --phase "connection tasks (ipc::server::serve_connection)=unitsync_ipc::server::serve_connection" \
    --phase "accept loop (Agent::serve_until)=unitsync_ipc::server::Agent::serve_until" \
    --phase "state journal (ipc::journal: encoding, group commit, writes)=unitsync_ipc::journal" \
    --phase "tokio worker idle/park (Context::park)=multi_thread::worker::Context::park"
  if [ -s "$work/cpu-agent.stat" ]; then
    printf '\n## System calls of the agent in the same run (perf stat tracepoints)\n\n'
    awk -F, -v out="$work/cpu-agent.out" '
      BEGIN { while ((getline line < out) > 0) if (line ~ / ops in /) { split(line, f, " "); requests += f[2] } }
      $3 ~ /sys_enter_/ { name = $3; sub(/.*sys_enter_/, "", name)
        printf "%-11s %9d  %5.2f per request\n", name, $1, $1 / requests }
      END { printf "(%d requests, each answered by one final frame; plus a hello per connection)\n", requests }' \
      "$work/cpu-agent.stat"
  fi
  printf '\n## Workload output (wall times are under perf, on a shared machine)\n\n'
  cat "$work/cpu-agent.out"
} >"$here/cpu-agent.txt"
rm -f "$work"/*.data

# --- heap: W4 under dhat ----------------------------------------------------------------------
log "W4 without dhat (what glibc malloc really holds)"
{
  echo "without dhat (ordinary allocator):"
  "$bin/stress" memory --units "$units"
  echo "under dhat (every allocation recorded, so the build is slow):"
} >"$work/memory.out"
log "building stress with dhat as its global allocator"
cargo build --release --quiet -p unitsync-benches --bin stress --features dhat-heap
log "W4 under dhat"
(cd "$work" && "$bin/stress" memory --units "$units" --dhat-out heap-w4.json) \
  >>"$work/memory.out" 2>"$work/memory.err" || { cat "$work/memory.err" >&2; die "dhat run failed"; }
# The viewer shows `cmd`: keep the binary's name, not this machine's path.
python3 - "$work/heap-w4.json" "$here/heap-w4.json" <<'EOF'
import json, os, sys
data = json.load(open(sys.argv[1], encoding="utf-8"))
argv = data.get("cmd", "").split(" ")
data["cmd"] = " ".join([os.path.basename(argv[0])] + argv[1:])
json.dump(data, open(sys.argv[2], "w", encoding="utf-8"), separators=(",", ":"))
EOF
{
  python3 "$here/summarize.py" dhat "$here/heap-w4.json" --units "$units" \
    --title "heap-w4: stress memory --units $units under dhat ($commit, $when)"
  printf '\n## Workload output\n\n'
  cat "$work/memory.out"
} >"$here/heap-w4.txt"
# Leave the ordinary (non-dhat) stress binary in place; both variants stay cached.
cargo build --release --quiet -p unitsync-benches --bin stress

log "done in $((SECONDS - started)) s: $(cd "$here" && echo *.svg *.txt *.json)"
