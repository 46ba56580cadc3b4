# shellcheck shell=bash
# Shared helpers for Berth's benchmarks (bench/*). Source it; it does nothing by itself:
#   . "$(dirname "$0")/lib.sh"
#
# A benchmark runs containerd and berthd side by side, each with its own root, state and socket
# under one temp directory, and drives both with the same `ctr`. These helpers start and stop the
# daemons and a loopback registry, keep track of every process they started (and only those), and
# measure time and memory. Daemons are named `containerd` and `berthd` in the arrays below.

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

# Loopback traffic must never go through a proxy the operator's environment names.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

BENCH_TMP=""           # the temp directory (bench_init)
BENCH_KEEP=0           # 1: keep BENCH_TMP on exit
BENCH_STARTED=()       # PIDs this benchmark started; bench_cleanup stops these and nothing else
declare -A BENCH_STARTED_EXE=()   # PID -> the executable it was started with
declare -A BENCH_PID=() BENCH_SOCK=() BENCH_ROOT=() BENCH_LOG=() BENCH_EXE=()
BENCH_REGISTRY_PID=""
BENCH_REGISTRY=""      # 127.0.0.1:PORT once bench_start_registry returns

bench_log() { printf '==> %s\n' "$*" >&2; }

# Makes the temp directory and installs the exit trap. The directory name must not contain ':'
# (skopeo splits on it) and must leave room for socket paths (108 bytes at most).
bench_init() {
    local base="${BENCH_TMPDIR:-${TMPDIR:-/tmp}}"
    BENCH_TMP=$(mktemp -d "$base/berth-bench.XXXXXX") || berth_die "cannot create a temp directory in $base"
    case "$BENCH_TMP" in *:*) berth_die "temp directory $BENCH_TMP contains ':'; set BENCH_TMPDIR" ;; esac
    [ "${#BENCH_TMP}" -le 60 ] || berth_die "temp directory path $BENCH_TMP is too long for unix sockets; set BENCH_TMPDIR"
    mkdir -p "$BENCH_TMP/logs"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Stops the processes this benchmark started (by their PIDs, after checking each still runs the
# executable it was started with) and removes the temp directory unless --keep was given.
bench_cleanup() {
    local rc=$? pid
    trap - EXIT
    for pid in "${BENCH_STARTED[@]}"; do
        if bench_owned_pid_alive "$pid"; then
            berth_stop_pid "$pid" 20 || berth_warn "could not stop PID $pid"
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$BENCH_TMP" ] && [ -d "$BENCH_TMP" ]; then
        if [ "$BENCH_KEEP" = 1 ]; then
            bench_log "kept $BENCH_TMP (logs in $BENCH_TMP/logs)"
        elif awk -v d="$BENCH_TMP/" 'index($5 "/", d) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
            # Nothing here mounts, but never delete through a mount point.
            berth_warn "something is mounted under $BENCH_TMP; not removing it"
        else
            rm -rf "$BENCH_TMP"
        fi
    fi
    exit "$rc"
}

# True when PID (started by this benchmark) is alive and still runs the executable it started with.
bench_owned_pid_alive() {
    local pid="$1"
    [ -n "${BENCH_STARTED_EXE[$pid]:-}" ] || return 1
    berth_pid_runs "$pid" "${BENCH_STARTED_EXE[$pid]}"
}

# bench_spawn LOG EXE ARGS... : starts EXE in the background, output to LOG; sets BENCH_SPAWNED.
bench_spawn() {
    local log="$1" exe
    shift
    exe=$(readlink -f "$(command -v "$1")") || berth_die "$1 not found"
    "$@" >"$log" 2>&1 </dev/null &
    BENCH_SPAWNED=$!
    BENCH_STARTED+=("$BENCH_SPAWNED")
    BENCH_STARTED_EXE[$BENCH_SPAWNED]="$exe"
}

# Waits up to SECONDS for `ctr --address SOCK version` to answer while PID lives.
bench_wait_ctr() {
    local name="$1" seconds="${2:-60}" i
    for ((i = 0; i < seconds * 10; i++)); do
        if ! kill -0 "${BENCH_PID[$name]}" 2>/dev/null; then
            tail -n 30 "${BENCH_LOG[$name]}" >&2
            berth_die "$name exited during startup (log above: ${BENCH_LOG[$name]})"
        fi
        ctr --address "${BENCH_SOCK[$name]}" version >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tail -n 30 "${BENCH_LOG[$name]}" >&2
    berth_die "$name did not answer ctr version on ${BENCH_SOCK[$name]} within ${seconds}s"
}

# Plugins containerd would try to load that need setup this machine may not have (aufs, btrfs,
# zfs and devmapper need their file systems or a thin pool; opt writes to /opt/containerd; cri
# needs CNI and is not what these benchmarks compare).
BENCH_CONTAINERD_DISABLED=(
    io.containerd.grpc.v1.cri
    io.containerd.internal.v1.opt
    io.containerd.snapshotter.v1.aufs
    io.containerd.snapshotter.v1.btrfs
    io.containerd.snapshotter.v1.zfs
    io.containerd.snapshotter.v1.devmapper
)

# Drops FILEs from the page cache (posix_fadvise DONTNEED), so that each daemon and shim binary is
# read back by page faults when it starts, as after a reboot, whatever happened to it before. A
# binary that was just written (install, cp) or read with read(2) sits in the page cache in large
# folios, and this host's kernel (6.18) maps a whole large folio on a page fault: processes of such
# a binary then count far more RSS than the same binary loaded by faults (a running berth-shim
# measured 5.2 MB against 4.1 MB). Pages that a running process maps stay where they are.
bench_drop_page_cache() {
    python3 - "$@" <<'PY'
import os, sys
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
PY
}

# Starts Debian's containerd on its own root, state and socket under $BENCH_TMP/containerd, from a
# cold page cache (bench_drop_page_cache), with its runc shim.
bench_start_containerd() {
    local dir="$BENCH_TMP/containerd" disabled="" p
    command -v containerd >/dev/null 2>&1 || berth_die "containerd not found; run scripts/install-deps"
    mkdir -p "$dir/root" "$dir/state"
    for p in "${BENCH_CONTAINERD_DISABLED[@]}"; do disabled+="${disabled:+, }\"$p\""; done
    cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = [$disabled]

[grpc]
  address = "$dir/state/containerd.sock"
EOF
    BENCH_SOCK[containerd]="$dir/state/containerd.sock"
    BENCH_ROOT[containerd]="$dir/root"
    BENCH_LOG[containerd]="$BENCH_TMP/logs/containerd.log"
    bench_drop_page_cache "$(readlink -f "$(command -v containerd)")" \
        $(command -v containerd-shim-runc-v2 >/dev/null 2>&1 && readlink -f "$(command -v containerd-shim-runc-v2)")
    bench_spawn "${BENCH_LOG[containerd]}" containerd --config "$dir/config.toml"
    BENCH_PID[containerd]=$BENCH_SPAWNED
    BENCH_EXE[containerd]=$(readlink -f "$(command -v containerd)")
    bench_wait_ctr containerd
}

# Starts berthd (binary BIN) on its own root, state and socket under $BENCH_TMP/berthd, from a cold
# page cache (bench_drop_page_cache; a shim the caller names goes through it too). A config file is
# passed too, so that /etc/berth/config.toml never applies; BENCH_BERTHD_CONFIG_EXTRA (TOML) is
# appended to it.
bench_start_berthd() {
    local bin="$1" dir="$BENCH_TMP/berthd"
    mkdir -p "$dir/root" "$dir/state"
    cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"

[grpc]
  address = "$dir/state/berthd.sock"
${BENCH_BERTHD_CONFIG_EXTRA:-}
EOF
    BENCH_SOCK[berthd]="$dir/state/berthd.sock"
    BENCH_ROOT[berthd]="$dir/root"
    BENCH_LOG[berthd]="$BENCH_TMP/logs/berthd.log"
    bench_drop_page_cache "$bin"
    bench_spawn "${BENCH_LOG[berthd]}" "$bin" --config "$dir/config.toml" \
        --root "$dir/root" --state "$dir/state" --address "$dir/state/berthd.sock"
    BENCH_PID[berthd]=$BENCH_SPAWNED
    BENCH_EXE[berthd]=$(readlink -f "$bin")
    bench_wait_ctr berthd
}

# Prints the path of a release berthd: $BERTHD if set, else builds it in the repository
# (berth_build_release, as scripts/setup builds it; output in $BENCH_TMP/logs/build.log).
bench_berthd_binary() {
    local log="$BENCH_TMP/logs/build.log" bin
    if [ -n "${BERTHD:-}" ]; then
        [ -x "$BERTHD" ] || berth_die "BERTHD=$BERTHD is not an executable"
        readlink -f "$BERTHD"
        return 0
    fi
    berth_ensure_swift
    bench_log "building berthd (release, as scripts/setup does; the first build takes 10 minutes or more)"
    if ! bin=$(cd "$BERTH_REPO" && berth_build_release 2>"$log"); then
        tail -n 40 "$log" >&2
        berth_die "release build of berthd failed (log above); or set BERTHD to a built binary"
    fi
    [ -x "$bin" ] || berth_die "release build did not produce $bin"
    printf '%s\n' "$bin"
}

# Starts Debian's docker-registry on a free loopback port with storage under $BENCH_TMP/registry.
# Sets BENCH_REGISTRY to 127.0.0.1:PORT.
bench_start_registry() {
    local dir="$BENCH_TMP/registry" port i attempt
    command -v docker-registry >/dev/null 2>&1 || berth_die "docker-registry not found; run scripts/install-deps"
    command -v curl >/dev/null 2>&1 || berth_die "curl not found; run scripts/install-deps"
    mkdir -p "$dir/data"
    for ((attempt = 0; attempt < 5; attempt++)); do
        port=$(berth_free_port) || berth_die "no free port on 127.0.0.1"
        cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: 127.0.0.1:$port
EOF
        bench_spawn "$BENCH_TMP/logs/registry.log" docker-registry serve "$dir/config.yml"
        BENCH_REGISTRY_PID=$BENCH_SPAWNED
        for ((i = 0; i < 100; i++)); do
            kill -0 "$BENCH_REGISTRY_PID" 2>/dev/null || break
            if curl -sf --noproxy '*' -o /dev/null "http://127.0.0.1:$port/v2/"; then
                BENCH_REGISTRY="127.0.0.1:$port"
                return 0
            fi
            sleep 0.1
        done
        # Lost the race for the port, or it is slow: stop this one and try another port.
        if bench_owned_pid_alive "$BENCH_REGISTRY_PID"; then
            berth_stop_pid "$BENCH_REGISTRY_PID" 5 || true
        fi
    done
    tail -n 20 "$BENCH_TMP/logs/registry.log" >&2
    berth_die "docker-registry did not come up (log above)"
}

# Prints a field (kB) of /proc/PID/status, e.g. bench_status_kb PID VmRSS.
bench_status_kb() {
    awk -v f="$2:" '$1 == f { print $2; found = 1 } END { exit !found }' "/proc/$1/status"
}

# Prints nanoseconds since the epoch.
bench_now_ns() { date +%s%N; }

# Prints B/A with 2 decimals, or "n/a" when either is missing or A is zero.
bench_ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a == "" || b == "" || a == "n/a" || b == "n/a" || a + 0 == 0) { print "n/a"; exit }
        printf "%.2f\n", b / a }'
}

# Prints the median of its arguments (numbers), or "n/a" with none.
bench_median() {
    [ $# -gt 0 ] || { echo n/a; return 0; }
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Prints ", built from REV" (plus "plus uncommitted changes in Sources/" when the work tree has
# some) when bench_berthd_binary built berthd from this repository; nothing when BERTHD was given.
bench_berthd_source() {
    local rev
    [ -z "${BERTHD:-}" ] || return 0
    rev=$(git -C "$BERTH_REPO" rev-parse --short HEAD 2>/dev/null) || return 0
    if [ -n "$(git -C "$BERTH_REPO" status --porcelain -- Sources Package.swift Package.resolved 2>/dev/null)" ]; then
        printf ', built from %s plus uncommitted changes in Sources/\n' "$rev"
    else
        printf ', built from %s\n' "$rev"
    fi
}

# Prints the server version `ctr --address SOCK version` reports for a started daemon.
bench_server_version() {
    ctr --address "${BENCH_SOCK[$1]}" version 2>/dev/null | awk '/^Server:/ { s = 1 } s && $1 == "Version:" { print $2; exit }'
}

# Prints the CPU time PID has used so far, user plus system, in seconds (from /proc/PID/stat;
# children it waited for are not included).
bench_cpu_seconds() {
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    rest=${stat##*) }   # the command name may hold spaces and parentheses; fields follow the last ')'
    # After the name: state(3) ppid(4) ... utime(14) stime(15), i.e. the 12th and 13th here.
    awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($12 + $13) / t }' <<<"$rest"
}
