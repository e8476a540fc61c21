#!/usr/bin/env bash
# Build the synguard image (deploy/kubernetes/Dockerfile, unchanged) and try it:
# `synguard --version` and `--help` in a container of it.
#
# usage: deploy/kubernetes/build-image.sh [--tag synguard:VERSION] [--local-base]
#   --tag TAG      the image's name (default synguard:<version in pyproject.toml>)
#   --local-base   make the Dockerfile's base image (FROM, a Debian suite) here
#                  with debootstrap and `docker import` it under the same name,
#                  for a machine that reaches Debian's mirrors and PyPI but no
#                  container registry. Also done when the base can be neither
#                  found locally nor pulled.
#
# Needs a running Docker daemon and root. `make image` runs it; not part of
# `make test` (a few minutes, and a daemon). The build's RUN steps use the
# host's network (--network host), so a daemon without a bridge serves too.
# The locally made base carries the host's locally added CA certificates
# (/usr/local/share/ca-certificates) and points pip at the system bundle,
# so that a proxy the host trusts is trusted inside the build as well.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
DOCKERFILE=$SRC/deploy/kubernetes/Dockerfile
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$SRC/pyproject.toml")
TAG=synguard:$VERSION
LOCAL_BASE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --local-base) LOCAL_BASE=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
say() { echo "build-image: $*"; }
die() { echo "build-image: error: $*" >&2; exit 2; }

command -v docker >/dev/null || die "no docker client (apt install docker.io)"
docker info >/dev/null 2>&1 || die "no Docker daemon answers ($(docker info 2>&1 | grep -m1 -i error || true)): start one (dockerd)"

BASE=$(awk 'toupper($1) == "FROM" { print $2; exit }' "$DOCKERFILE")
SUITE=${BASE#debian:}
SUITE=${SUITE%-slim}
[ "$BASE" != "$SUITE" ] || die "the Dockerfile's base $BASE is not a debian:SUITE image"

if [ "$LOCAL_BASE" = 0 ] && ! docker image inspect "$BASE" >/dev/null 2>&1; then
  say "pulling $BASE"
  docker pull -q "$BASE" >/dev/null 2>&1 || { say "cannot pull $BASE: making it here"; LOCAL_BASE=1; }
fi

if [ "$LOCAL_BASE" = 1 ]; then
  [ "$(id -u)" = 0 ] || die "debootstrap needs root"
  command -v debootstrap >/dev/null || die "no debootstrap (apt install debootstrap)"
  root=$(mktemp -d /var/tmp/synguard-base.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  say "debootstrap $SUITE (minbase) into $root"
  debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$root" >"$root.log" 2>&1 ||
    { tail -5 "$root.log" >&2; rm -f "$root.log"; die "debootstrap $SUITE failed"; }
  rm -f "$root.log"
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1
  fi
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  say "docker import as $BASE"
  tar -C "$root" --numeric-owner -c . | docker import -c 'CMD ["bash"]' - "$BASE" >/dev/null
fi

say "docker build -f deploy/kubernetes/Dockerfile -t $TAG"
start=$(date +%s)
docker build --network host --force-rm -q -f "$DOCKERFILE" -t "$TAG" "$SRC" >/dev/null
say "built $TAG in $(($(date +%s) - start)) s, $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{ printf "%.0f MB", $1 / 1e6 }')"

for args in "--version" "synguard --version"; do
  # shellcheck disable=SC2086
  got=$(docker run --rm --network none "$TAG" $args)
  [ "$got" = "synguard $VERSION" ] || die "docker run $TAG $args said '$got', not 'synguard $VERSION'"
  say "docker run --rm $TAG $args: $got"
done
help=$(docker run --rm --network none "$TAG" synguard --help)
case "$help" in
  "usage: synguard "*) say "docker run --rm $TAG synguard --help: $(printf '%s\n' "$help" | wc -l) lines, from '$(printf '%s\n' "$help" | head -1)'" ;;
  *) die "docker run $TAG synguard --help said: $(printf '%s\n' "$help" | head -3)" ;;
esac
