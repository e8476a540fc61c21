#!/bin/sh
# The image's entrypoint: synguard's arguments (docker run IMAGE --version,
# or IMAGE synguard --version). `attach` and `status` without an interface get the
# node's one, SYNGUARD_IFACE if set, else the interface of the default
# route (IPv4, then IPv6) in the node's network namespace (hostNetwork).
set -e
# bcc looks for /lib/modules/$(uname -r)/build: on a node the kernel is not
# the one the image was built on, so point it at the headers in the image.
k=$(uname -r)
if [ ! -e "/lib/modules/$k/build" ]; then
  build=$(ls -d /usr/src/linux-headers-*-amd64 /usr/src/linux-headers-*-arm64 2>/dev/null | sort -V | tail -n 1)
  mkdir -p "/lib/modules/$k"
  ln -sfn "$build" "/lib/modules/$k/build"
  ln -sfn "${build%-*}-common" "/lib/modules/$k/source"
fi
# `docker run IMAGE synguard status`, as people type it: the command's
# name in front is the command itself.
if [ "${1:-}" = synguard ]; then shift; fi
case "${1:-}" in
  attach|status)
    cmd=$1; shift
    iface=${SYNGUARD_IFACE:-$(awk '$2 == "00000000" { print $1; exit }' /proc/net/route)}
    [ -n "$iface" ] || iface=$(awk '$1 == "00000000000000000000000000000000" && $2 == "00" && $10 != "lo" { print $10; exit }' /proc/net/ipv6_route)
    if [ -z "$iface" ]; then
      echo "synguard: error: no default route on this node: set SYNGUARD_IFACE" >&2
      exit 2
    fi
    set -- "$cmd" "$iface" "$@"
    ;;
esac
exec "${SYNGUARD_BIN:-/usr/local/bin/synguard}" "$@"
