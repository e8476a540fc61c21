#!/usr/bin/env bash
# Install synguard and everything it needs on Debian 11/12/13 or Ubuntu 22.04/24.04.
# Safe to run again: it only adds what is missing and refreshes the package.
#
# usage: deploy/install.sh [--venv DIR] [--dev] [--link] [--systemd] [--extra-apt PKGS]
#   --venv DIR    virtualenv to install into (default /opt/synguard/venv)
#   --dev         editable install of this tree with the test extras
#   --link        put synguard on PATH as /usr/local/bin/synguard
#   --systemd     install synguard@.service and /etc/synguard/synguard.example.toml
#   --extra-apt   more Debian packages (space separated), e.g. for tests
#
# The Makefile's install, demo and test targets all come through here.
set -euo pipefail

VENV=/opt/synguard/venv
DEV=0
LINK=0
SYSTEMD=0
EXTRA_APT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) VENV="$2"; shift 2 ;;
    --dev) DEV=1; shift ;;
    --link) LINK=1; shift ;;
    --systemd) SYSTEMD=1; shift ;;
    --extra-apt) EXTRA_APT="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

say() { echo "install: $*"; }
SRC=$(cd "$(dirname "$0")/.." && pwd)
KVER=$(uname -r)

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (apt, /lib/modules, bpffs)" >&2
  exit 2
fi

# --- distribution packages --------------------------------------------------
# bcc for the system python3 (the PyPI "bcc" is an unrelated package), libbpf
# comes with it; iproute2 for the test bed; bpftool to inspect what is loaded.
APT_PKGS="python3-bpfcc python3-venv iproute2 ethtool $EXTRA_APT"
if apt-cache show bpftool >/dev/null 2>&1; then
  APT_PKGS="$APT_PKGS bpftool"
else
  say "no bpftool package here (Ubuntu ships it in linux-tools); skipping it"
fi

missing=()
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Kernel headers: bcc compiles against /lib/modules/$KVER/build.
if [ ! -e "/lib/modules/$KVER/build/include" ]; then
  if apt-cache show "linux-headers-$KVER" >/dev/null 2>&1; then
    missing+=("linux-headers-$KVER")
  else
    HEADERS_FALLBACK=1
  fi
fi
if [ "${HEADERS_FALLBACK:-0}" = 1 ] || [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  say "apt-get update"
  apt-get update -q >/dev/null
fi
if [ "${HEADERS_FALLBACK:-0}" = 1 ]; then
  # No headers for this exact kernel: only the uapi headers matter for XDP
  # and tc programs, so the distribution's current generic headers do.
  . /etc/os-release
  if [ "${ID:-}" = ubuntu ]; then
    missing+=(linux-headers-generic)
  else
    missing+=("linux-headers-$(dpkg --print-architecture)")
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -e "/lib/modules/$KVER/build/include" ]; then
  build=$(ls -d /usr/src/linux-headers-*-amd64 /usr/src/linux-headers-*-arm64 /usr/src/linux-headers-*-generic 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$build" ]; then
    echo "install.sh: no kernel headers for $KVER and no fallback found" >&2
    exit 1
  fi
  common="${build%-*}-common"                     # Debian splits the tree in two
  [ -d "$common" ] || common="${build%-generic}"   # Ubuntu
  [ -d "$common" ] || common="$build"
  say "no linux-headers-$KVER: using $(basename "$build") (only uapi headers are compiled against)"
  mkdir -p "/lib/modules/$KVER"
  ln -sfn "$build" "/lib/modules/$KVER/build"
  ln -sfn "$common" "/lib/modules/$KVER/source"
fi

# --- the Python package -------------------------------------------------------
# bcc works only under the system interpreter: the venv sees it through
# --system-site-packages.
if [ ! -x "$VENV/bin/python" ]; then
  say "virtualenv $VENV"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
# The package is built with the venv's own setuptools (no build isolation,
# which would fetch setuptools from PyPI each time): run again, with its
# dependencies in place, the install needs no network (a Vagrant box's
# provisioning runs it offline). setuptools >= 70.1 builds wheels without
# the wheel package; Debian 12's venvs come with 66, Debian 13's with none.
if ! "$VENV/bin/python" -c 'import sys, setuptools
v = tuple(int(x) for x in setuptools.__version__.split(".")[:2])
sys.exit(v < (70, 1))' 2>/dev/null; then
  say "pip install setuptools (the build backend)"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'setuptools>=70.1'
fi
# Editable installs without a setup.py (PEP 660) need pip >= 21.3; Debian
# 11's venvs come with pip 20.3, which refuses them.
if [ "$DEV" = 1 ] && ! "$VENV/bin/python" -c 'import sys, pip
v = tuple(int(x) for x in pip.__version__.split(".")[:2])
sys.exit(v < (21, 3))' 2>/dev/null; then
  say "pip install pip (editable installs need 21.3)"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'pip>=21.3'
fi
if [ "$DEV" = 1 ]; then
  say "pip install -e $SRC[test]"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation -e "$SRC[test]"
else
  say "pip install $SRC"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation --upgrade "$SRC"
fi
"$VENV/bin/python" -c "import bcc, synguard.cli" || {
  echo "install.sh: the venv cannot import bcc and synguard" >&2
  exit 1
}

if [ "$LINK" = 1 ]; then
  ln -sfn "$VENV/bin/synguard" /usr/local/bin/synguard
  say "synguard is /usr/local/bin/synguard"
fi
if [ "$SYSTEMD" = 1 ]; then
  install -D -m 0644 "$SRC/deploy/systemd/synguard@.service" /etc/systemd/system/synguard@.service
  install -D -m 0644 "$SRC/deploy/synguard.example.toml" /etc/synguard/synguard.example.toml
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
  fi
  say "synguard@.service installed: write /etc/synguard/IFACE.toml, then systemctl enable --now synguard@IFACE"
fi
say "done"
