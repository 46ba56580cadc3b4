# shellcheck shell=bash
# Shared helpers for Berth's scripts. Source it; it does nothing by itself:
#   . "$(dirname "$0")/lib.sh"

# shellcheck disable=SC2034 # used by the scripts that source this file
BERTH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

berth_log() { printf '==> %s\n' "$*" >&2; }
berth_warn() { printf 'warning: %s\n' "$*" >&2; }
berth_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Puts the Swift toolchain on PATH when `swift` is not found (the Debian machines here keep it at
# /opt/swift/usr/bin, which root's non-login shells and sudo's secure_path often lack).
berth_ensure_swift() {
    command -v swift >/dev/null 2>&1 && return 0
    local dir
    for dir in ${BERTH_SWIFT_BIN:+"$BERTH_SWIFT_BIN"} /opt/swift/usr/bin /usr/share/swift/usr/bin /usr/local/swift/usr/bin; do
        if [ -x "$dir/swift" ]; then
            PATH="$dir:$PATH"
            export PATH
            return 0
        fi
    done
    berth_die "swift not found on PATH nor in /opt/swift/usr/bin; install Swift 6.1 or newer (or set BERTH_SWIFT_BIN to its bin directory)"
}

# True when systemd is the init system (the test sd_booted(3) uses).
berth_systemd_is_init() {
    [ -d /run/systemd/system ]
}

# Prints the executable path of PID, without the " (deleted)" suffix the kernel adds once the
# binary was replaced on disk (as an upgrade does). Fails if the process is gone.
berth_pid_exe() {
    local exe
    exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
    printf '%s\n' "${exe% (deleted)}"
}

# True when PID is alive and runs the executable EXE. A PID read from a file is only trusted after
# this check, so a recycled PID is never signalled.
berth_pid_runs() {
    local pid="$1" exe="$2" actual
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    actual=$(berth_pid_exe "$pid") || return 1
    [ "$actual" = "$exe" ]
}

# Sends SIGTERM to PID and waits up to SECONDS (default 20) for it to exit; then SIGKILL.
# Callers must have identified PID themselves (berth_pid_runs) first.
berth_stop_pid() {
    local pid="$1" seconds="${2:-20}" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < seconds * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    berth_warn "PID $pid did not exit within ${seconds}s of SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# Prints the PID of the process listening on the unix socket PATH (from `ss`, needs root to see
# other users' processes). Fails when nothing listens there.
berth_unix_listener_pid() {
    local path="$1" pid
    command -v ss >/dev/null 2>&1 || return 1
    pid=$(ss -xlpnH 2>/dev/null | awk -v p="$path" '$5 == p' | grep -o 'pid=[0-9]*' | head -n 1)
    [ -n "$pid" ] || return 1
    printf '%s\n' "${pid#pid=}"
}

# Prints a TCP port on 127.0.0.1 that nothing listens on right now.
berth_free_port() {
    local port i
    for ((i = 0; i < 200; i++)); do
        port=$((20000 + RANDOM % 40000))
        if ! ss -ltnH 2>/dev/null | awk '{print $4}' | grep -q ":$port\$"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    return 1
}

# How the release berthd is built (scripts/setup, bench/*): static Swift runtime; every Swift and C
# function in a section of its own (-function-sections), so the link can place each one; linked by
# lld, through scripts/ld-static-deps, which takes libstdc++, SQLite, zlib and zstd from their
# static archives; with packed relative relocations (DT_RELR: the dynamic loader no longer touches
# 3 MB of relocation entries at start-up), without exporting every symbol dynamically (an
# executable needs none), and with the functions that run at start-up and idle laid out together
# (packaging/berthd.order, made by scripts/gen-order) so the kernel maps fewer pages of code;
# functions without a symbol, which an order file cannot name, go in one block beside them
# (packaging/unnamed-text.ld). Together these take berthd's idle RSS from 34 MB to about 17 MB.
# Names that no longer exist in the order file are ignored, so a stale file only costs memory,
# never correctness.
BERTH_RELEASE_FLAGS=(-c release --static-swift-stdlib
    -Xswiftc -Xfrontend -Xswiftc -function-sections
    -Xcc -ffunction-sections
    -Xswiftc "-use-ld=$BERTH_REPO/scripts/ld-static-deps"
    -Xlinker -z -Xlinker pack-relative-relocs
    -Xlinker --no-export-dynamic
    -Xlinker -no-pie
    -Xlinker --gc-sections
    -Xlinker "--symbol-ordering-file=$BERTH_REPO/packaging/berthd.order"
    -Xlinker --no-warn-symbol-ordering
    -Xlinker -T -Xlinker "$BERTH_REPO/packaging/unnamed-text.ld")
BERTH_RELEASE_BUILD=("${BERTH_RELEASE_FLAGS[@]}" --product berthd)

# Builds the release berthd (run from $BERTH_REPO) and prints its path.
berth_build_release() {
    swift build "${BERTH_RELEASE_BUILD[@]}" >&2
    printf '%s/berthd\n' "$(swift build "${BERTH_RELEASE_BUILD[@]}" --show-bin-path)"
}

# How the release berth-shim is built: its memory is paid once per container, so it is one fully
# static executable (no shared libc, libstdc++ or libm to map; measured 6.7 MB RSS per idle shim
# against 10.1 MB linked dynamically) with unused sections dropped. Every Swift and C function
# sits in a section of its own and lld lays out the ones a shim runs while it creates, starts and
# watches a container together at the front (packaging/berth-shim.order, made by
# scripts/gen-shim-order), so the code a running shim touches is a few contiguous pages instead
# of pages spread over 6 MB (6.7 MB to 5.1 MB RSS per running shim), with the functions that have
# no symbol in one block beside them (packaging/unnamed-text.ld). -static-executable
# changes how SwiftPM compiles too, so the shim builds in a scratch path of its own; its few
# modules (no NIO, gRPC or Foundation) build in a minute or two. SwiftPM was seen to keep objects
# when only -Xswiftc/-Xcc flags changed: after changing those, delete the scratch path's *.o.
BERTH_SHIM_RELEASE_BUILD=(--scratch-path "$BERTH_REPO/.build-shim-release" -c release --static-swift-stdlib
    -Xswiftc -static-executable
    -Xswiftc -Xfrontend -Xswiftc -function-sections
    -Xcc -ffunction-sections
    -Xswiftc -use-ld=lld
    -Xlinker --gc-sections
    -Xlinker "--symbol-ordering-file=$BERTH_REPO/packaging/berth-shim.order"
    -Xlinker --no-warn-symbol-ordering
    -Xlinker -T -Xlinker "$BERTH_REPO/packaging/unnamed-text.ld"
    --product berth-shim)

# Builds the release berth-shim (run from $BERTH_REPO) and prints its path.
berth_build_release_shim() {
    swift build "${BERTH_SHIM_RELEASE_BUILD[@]}" >&2
    printf '%s/berth-shim\n' "$(swift build "${BERTH_SHIM_RELEASE_BUILD[@]}" --show-bin-path)"
}
