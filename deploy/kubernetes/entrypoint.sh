#!/bin/sh
# bcc looks for /lib/modules/$(uname -r)/build: on a node the kernel is not
# the one the image was built on, so point it at the headers in the image.
set -e
k=$(uname -r)
if [ ! -e "/lib/modules/$k/build" ]; then
  build=$(ls -d /usr/src/linux-headers-*-amd64 /usr/src/linux-headers-*-arm64 2>/dev/null | sort -V | tail -n 1)
  mkdir -p "/lib/modules/$k"
  ln -sfn "$build" "/lib/modules/$k/build"
  ln -sfn "${build%-*}-common" "/lib/modules/$k/source"
fi
exec /usr/local/bin/synguard "$@"
