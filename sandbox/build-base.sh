#!/usr/bin/env bash
# Builds a Debian bookworm base image from Debian's packages, for machines that
# cannot pull from a registry. The sandbox Dockerfile then builds on top of it.
set -euo pipefail
tag="${1:-nanocode/base:bookworm}"
suite="${SUITE:-bookworm}"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag already present"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
echo "debootstrap $suite into $root (about 30 s)"
debootstrap --variant=minbase "$suite" "$root" >/dev/null
tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "built base image $tag"
