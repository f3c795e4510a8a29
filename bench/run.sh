#!/usr/bin/env bash
# The benchmark harness's one command (bench/README.md):
#   bench/run.sh            full run (about 13.5 minutes after the builds)
#   bench/run.sh --smoke    a few seconds per scenario, to keep the harness working
# Any further arguments go to `dify-bench suite` (see `dify-bench suite --help`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
target="$here/target"

args=()
for a in "$@"; do
    args+=("$a")
done

# Release builds: dify-bff with the root package's [profile.release], in bench/target so the
# shared root target/ is left to the others; then the harness.
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --target-dir "$target" --bin dify-bff
cargo build --release --quiet --manifest-path "$here/Cargo.toml"

# Two sockets per relayed stream: take the hard limit (children inherit it).
ulimit -n "$(ulimit -Hn)"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx; then
    echo "run.sh: nginx not found; install it with: apt-get install -y nginx-light" >&2
    exit 1
fi
if ! need taskset; then
    echo "run.sh: taskset not found (util-linux); running unpinned" >&2
    args+=(--no-pin)
fi
if ! need oha; then
    echo "run.sh: oha not found (cargo install oha); using the harness's own JSON client" >&2
fi

echo "== machine"
echo "nproc: $(nproc)"
free -h | sed -n 1,2p
echo "uptime: $(uptime)"
echo "open files: $(ulimit -n)"
rustc --version
nginx -v 2>&1
need oha && oha --version
echo

# The suite itself (and so the load it generates) runs on CPU 0 with the upstream; each proxy
# under test gets CPU 1 to itself.
pin=()
if need taskset && [[ " ${args[*]-} " != *" --no-pin "* ]]; then
    pin=(taskset -c 0)
fi
exec "${pin[@]}" "$target/release/dify-bench" suite --bff-bin "$target/release/dify-bff" "${args[@]}"
