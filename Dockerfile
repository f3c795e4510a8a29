# dify-bff container image: a static musl binary on distroless/static.
#
#   docker build -t dify-bff:0.1.0 --build-arg VERSION=0.1.0 .
#   docker run --rm -p 3000:3000 -e DIFY_API_KEY=app-... dify-bff:0.1.0
#
# linux/amd64 (x86_64-unknown-linux-musl) or linux/arm64 (aarch64-unknown-linux-musl),
# picked from the platform being built (buildx's TARGETARCH):
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/OWNER/dify-bff:0.1.0 --push .
# Base images are fully qualified, so podman and buildah build it as docker does; they need
# `--format docker` to keep HEALTHCHECK (the OCI image format has no health check).
# .ci/build-musl.sh runs the very same cargo command, so CI notices when this
# build would break. Keep the two in step: see CARGO_BUILD_FLAGS in that script.
# See docs/deploy.md for running it.

ARG RUST_VERSION=1

############################################################################
# Builder
############################################################################
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder

# Set by buildx/podman for the platform being built; plain `docker build` leaves it empty.
ARG TARGETARCH

# musl-tools provides musl-gcc. reqwest uses rustls with the aws-lc-rs
# provider, and aws-lc-sys compiles AWS-LC's C and assembly sources with the
# `cc` crate. For x86_64-unknown-linux-musl, cc uses musl-gcc. No cmake,
# clang/bindgen or nasm is needed here:
#   - aws-lc-sys includes pregenerated bindings for x86_64-unknown-linux-musl,
#     so it doesn't run bindgen and doesn't need clang;
#   - with bindings present and no FIPS/no-asm options, it uses its cc builder
#     instead of cmake;
#   - nasm is only used for Windows targets.
# musl-gcc does not see the kernel's <linux/random.h>. aws-lc-sys checks for it
# and falls back to getentropy(), which musl provides.
# Exact-version pin: bookworm has shipped musl 1.2.3-1 since its release.
# The Rust target for the platform goes to /rust-target, read by the build steps below.
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl > /rust-target ;; \
      arm64) echo aarch64-unknown-linux-musl > /rust-target ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
    && apt-get update \
    && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$(cat /rust-target)"

WORKDIR /build

# The production binary is built without the default `demo` feature: the Dify emulator
# (crates/dify-emulator, for `--demo` and the tests) is not compiled into the image.
# .ci/build-musl.sh uses the same flags.
# `--release` takes Cargo.toml's [profile.release]: fat LTO, one codegen unit, unwinding kept
# (a panicking request does not take the process down), debug info stripped, symbols kept.

# 1) Dependency layer: build every dependency against a dummy crate, so that
#    changing src/ or static/ does not recompile the ~300 crates again. The workspace
#    needs its members' manifests; the emulator is not built (no `demo` feature).
COPY Cargo.toml Cargo.lock ./
COPY crates/dify-emulator/Cargo.toml crates/dify-emulator/
RUN TARGET="$(cat /rust-target)" \
    && mkdir src crates/dify-emulator/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs crates/dify-emulator/src/lib.rs \
    && cargo build --release --locked --target "$TARGET" -p dify-bff --no-default-features \
    && rm -rf src crates \
        "target/$TARGET/release/.fingerprint/dify-bff-"* \
        "target/$TARGET/release/deps/dify_bff-"* \
        "target/$TARGET/release/deps/libdify_bff-"* \
        "target/$TARGET/release/dify-bff"*
# Removing the crate's fingerprints matters. COPY keeps the files' old mtimes,
# and without this cargo could treat the dummy build as up to date.

# 2) The real crate. static/ is embedded into the binary (rust-embed).
COPY crates ./crates
COPY src ./src
COPY static ./static
RUN TARGET="$(cat /rust-target)" \
    && cargo build --release --locked --target "$TARGET" -p dify-bff --no-default-features \
    && cp "target/$TARGET/release/dify-bff" /dify-bff \
    && readelf --program-headers --wide /dify-bff > /tmp/program-headers \
    && if grep -q INTERP /tmp/program-headers; then \
         echo 'dify-bff is dynamically linked; distroless/static has no libc' >&2; exit 1; \
       fi \
    && readelf --sections --wide /dify-bff > /tmp/sections \
    && if grep -q '\.symtab' /tmp/sections; then \
         echo 'dify-bff is not stripped: check strip = true in [profile.release]' >&2; exit 1; \
       fi \
    && /dify-bff --version \
    && { timeout 10 /dify-bff --demo >/dev/null 2>&1; test $? -eq 2; }

############################################################################
# Runtime: no shell, no libc, CA certificates at /etc/ssl/certs, tzdata,
# /etc/passwd with nonroot = 65532.
############################################################################
FROM gcr.io/distroless/static-debian12:nonroot

ARG VERSION=0.1.0
ARG SOURCE=https://github.com/OWNER/dify-bff
ARG LICENSES=NOASSERTION
LABEL org.opencontainers.image.title="dify-bff" \
      org.opencontainers.image.description="Backend-for-frontend for Dify chat apps: keeps the app key server-side, assigns each browser a Dify user and relays streaming answers unchanged." \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.version="${VERSION}"

COPY --from=builder /dify-bff /dify-bff

# /metrics shows token counts and cost: it gets a port of its own, not the public one.
ENV HOST=0.0.0.0 \
    PORT=3000 \
    METRICS_ADDR=0.0.0.0:9090
EXPOSE 3000 9090

# 65532:65532 is distroless's "nonroot" user. It is given as a number so that
# Kubernetes' runAsNonRoot can check it without a runAsUser in the pod spec.
USER 65532:65532

# `dify-bff healthcheck` GETs http://127.0.0.1:$PORT/healthz; exit 0 on 200.
# There is no shell or curl in this image, so the binary checks itself.
# Kubernetes ignores HEALTHCHECK and uses the probes in deploy/kubernetes.yaml.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/dify-bff", "healthcheck"]

# Exec form: dify-bff runs as PID 1 and receives SIGTERM itself. It then
# drains open streams for up to SHUTDOWN_GRACE_SECS (default 25 s). Kubernetes
# waits 30 s by default before SIGKILL. Docker waits only 10 s, so use
# `docker run --stop-timeout 30` or `docker stop -t 30`.
ENTRYPOINT ["/dify-bff"]
