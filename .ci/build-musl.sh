#!/usr/bin/env bash
# Build the release binary exactly as the Dockerfile does: a static
# x86_64-unknown-linux-musl binary, with the same cargo flags. CI runs this so
# a change that breaks the container build (a new C dependency that needs
# another tool, a crate that won't build for musl, a dynamically linked
# result) fails CI, although CI has no Docker engine.
#
# It installs what the Dockerfile's builder stage installs:
#   - the rustup target x86_64-unknown-linux-musl;
#   - Debian's musl-tools (musl-gcc). aws-lc-sys (rustls's aws-lc-rs provider)
#     compiles AWS-LC with it through the `cc` crate. Pregenerated bindings
#     mean no cmake, clang or nasm is needed; see the Dockerfile's comment.
# Needs root (or sudo) for apt-get the first time; later runs skip the install.
set -euo pipefail

TARGET=x86_64-unknown-linux-musl
# Keep in step with both `cargo build` lines in the Dockerfile. Without the default `demo`
# feature: the production binary carries no Dify emulator.
# `--release` takes Cargo.toml's [profile.release] (fat LTO, one codegen unit, panic = unwind):
# the container gets the same optimised build as `cargo build --release`.
CARGO_BUILD_FLAGS=(--release --locked --target "$TARGET" -p dify-bff --no-default-features)

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if ! command -v musl-gcc >/dev/null 2>&1; then
    echo "build-musl: installing musl-tools" >&2
    sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then sudo=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends musl-tools
fi

if ! rustup target list --installed | grep -x "$TARGET" >/dev/null; then
    echo "build-musl: rustup target add $TARGET" >&2
    rustup target add "$TARGET"
fi

echo "build-musl: cargo build ${CARGO_BUILD_FLAGS[*]}" >&2
cargo build "${CARGO_BUILD_FLAGS[@]}"

bin="target/$TARGET/release/dify-bff"

# distroless/static has no libc or dynamic loader: the binary must be static.
program_headers="$(readelf --program-headers --wide "$bin")"
if grep -q INTERP <<<"$program_headers"; then
    echo "build-musl: $bin is dynamically linked; it would not start in distroless/static" >&2
    exit 1
fi

"$bin" --version

# The production binary has no emulator: `--demo` must refuse (exit 2), not start serving.
demo_status=0
timeout 10 "$bin" --demo >/dev/null 2>&1 || demo_status=$?
if [[ "$demo_status" -ne 2 ]]; then
    echo "build-musl: $bin --demo exited $demo_status, not 2: was it built with the demo feature?" >&2
    exit 1
fi
echo "build-musl: OK, $(du -h "$bin" | cut -f1) static binary at $bin" >&2
