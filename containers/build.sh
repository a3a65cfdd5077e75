#!/usr/bin/env bash
# Build the image and (optionally) import it as an Enroot squashfs for Pyxis.
#   containers/build.sh [--tag nemo-rence:0.1.0] [--sqsh /lustre/images/nemo-rence.sqsh]
#                       [--build-arg KEY=VALUE ...]
# The versions come from containers/versions.env (the version matrix); a --build-arg given here
# overrides one of them. Needs docker (or podman via DOCKER=podman); the .sqsh step needs enroot
# (containers/enroot_import.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=nemo-rence:0.1.0 SQSH="" DOCKER=${DOCKER:-docker}
# shellcheck source=containers/versions.env
source containers/versions.env
BUILD_ARGS=(
  --build-arg "BASE_IMAGE=$NGC_PYTORCH_IMAGE" --build-arg "TRTLLM_VERSION=$TRTLLM_VERSION"
  --build-arg "RAY_VERSION=$RAY_VERSION" --build-arg "MEGATRON_CORE_VERSION=$MEGATRON_CORE_VERSION"
  --build-arg "TRANSFORMERS_VERSION=$TRANSFORMERS_VERSION"
)
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --sqsh) SQSH=$2; shift 2 ;;
    --build-arg) BUILD_ARGS+=(--build-arg "$2"); shift 2 ;;
    *) echo "build.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
"$DOCKER" build -f containers/Dockerfile -t "$TAG" "${BUILD_ARGS[@]}" .
if [ -n "$SQSH" ]; then
  bash containers/enroot_import.sh "dockerd://$TAG" "$SQSH"
fi
