#!/usr/bin/env bash
# Build dist/synguard_<version>-<revision>_all.deb for Debian's python3 with
# dpkg-deb alone (no debhelper): the package from pyproject.toml's layout in
# /usr/lib/python3/dist-packages, /usr/bin/synguard, the systemd unit and the
# example configuration from deploy/, a man page and a bash completion made
# from the argparse parser (packaging/gen_docs.py).
#
# usage: packaging/build-deb.sh     (make deb runs it, then lintian)
#   PYTHON=...           a python with setuptools to build the wheel (default .venv/bin/python)
#   OUT=DIR              where the .deb goes (default dist/)
#   DEB_REVISION=N       the Debian revision (default 1)
#   SOURCE_DATE_EPOCH=T  file times and dates (default: the last commit's)
# Prints the path of the .deb.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$SRC/.venv/bin/python}
OUT=${OUT:-$SRC/dist}
REVISION=${DEB_REVISION:-1}
MAINTAINER=${DEB_MAINTAINER:-"$(git -C "$SRC" log -1 --format='%an <%ae>' 2>/dev/null || true)"}
die() { echo "build-deb: $*" >&2; exit 1; }
[ -n "$MAINTAINER" ] || die "no maintainer: set DEB_MAINTAINER='Name <email>'"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$SRC" log -1 --format=%ct 2>/dev/null || date +%s)}
export LC_ALL=C TZ=UTC

meta() {  # a [project] field of pyproject.toml
  /usr/bin/python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"][sys.argv[2]])' \
    "$SRC/pyproject.toml" "$1"
}
VERSION=$(meta version)
SUMMARY=$(meta description)
DEBVER=$VERSION-$REVISION
DEB=$OUT/synguard_${DEBVER}_all.deb

work=$(mktemp -d /tmp/synguard-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
pylib=$root/usr/lib/python3/dist-packages
doc=$root/usr/share/doc/synguard

# --- the Python package: a wheel built from a copy of the tree ----------------
# A copy, so that no stale build/ of the work tree ends up in the package.
mkdir -p "$work/src" "$work/wheel" "$pylib"
cp -r "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/controller" "$SRC/bpf" "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
(cd "$work/src" && "$PYTHON" -c 'import sys; from setuptools import build_meta as b; b.build_wheel(sys.argv[1])' \
  "$work/wheel") >"$work/wheel.log" 2>&1 || { cat "$work/wheel.log" >&2; die "building the wheel failed"; }
/usr/bin/python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
  "$work"/wheel/synguard-"$VERSION"-*.whl "$pylib"
# dpkg owns these files: no RECORD, so pip will not uninstall them.
rm -f "$pylib/synguard-$VERSION.dist-info/RECORD"
for f in __init__.py cli/__init__.py layout.py lab/__init__.py bpf/maps.h bpf/xdp_synguard.c; do
  [ -f "$pylib/synguard/$f" ] || die "the wheel has no synguard/$f"
done
got=$(PYTHONPATH=$pylib /usr/bin/python3 -B -s -c 'import synguard; print(synguard.__version__)')
[ "$got" = "$VERSION" ] || die "synguard.__version__ is $got, pyproject.toml says $VERSION"

# --- the command, the unit, the example configuration -------------------------
install -D -m 0755 /dev/stdin "$root/usr/bin/synguard" <<'EOF'
#!/usr/bin/python3
# synguard (Debian package): bcc works only under the system python3.
import sys

from synguard.cli import main

sys.exit(main())
EOF
unit=$root/lib/systemd/system/synguard@.service
mkdir -p "$(dirname "$unit")"
src_unit=$SRC/deploy/systemd/synguard@.service
docs=(-e '/^Description=/a Documentation=man:synguard(8)')
grep -q '^Documentation=' "$src_unit" && docs=()
sed -e 's|/usr/local/bin/synguard|/usr/bin/synguard|g' "${docs[@]}" \
  -e 's|^# Installed by: .*|# Installed by:                 the synguard Debian package|' \
  -e 's|(see deploy/synguard.example.toml)|(see /etc/synguard/synguard.example.toml)|' \
  "$src_unit" >"$unit"
grep -q '^ExecStart=/usr/bin/synguard ' "$unit" || die "the unit's ExecStart does not run /usr/bin/synguard"
install -D -m 0644 "$SRC/deploy/synguard.example.toml" "$root/etc/synguard/synguard.example.toml"

# --- man page and bash completion, from build_parser() --------------------------
gen() { PYTHONPATH=$pylib /usr/bin/python3 -B -s "$SRC/packaging/gen_docs.py" "$@"; }
mkdir -p "$root/usr/share/man/man8" "$root/usr/share/bash-completion/completions"
gen man --date "$(date -u -d "@$SOURCE_DATE_EPOCH" +%F)" | gzip -9n >"$root/usr/share/man/man8/synguard.8.gz"
gen bash >"$root/usr/share/bash-completion/completions/synguard"
bash -n "$root/usr/share/bash-completion/completions/synguard" || die "the generated completion is not bash"

# --- /usr/share/doc/synguard ----------------------------------------------------
mkdir -p "$doc"
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: synguard
Upstream-Contact: $MAINTAINER

Files: *
Copyright: $(date -u -d "@$SOURCE_DATE_EPOCH" +%Y) ${MAINTAINER% <*}
License: GPL-2
 This program is free software; you can redistribute it and/or modify it
 under the terms of the GNU General Public License version 2 as published by
 the Free Software Foundation.
 .
 This program is distributed in the hope that it will be useful, but WITHOUT
 ANY WARRANTY; without even the implied warranty of MERCHANTABILITY or FITNESS
 FOR A PARTICULAR PURPOSE. See the GNU General Public License for more details.
 .
 On Debian systems, the complete text of the GNU General Public License
 version 2 can be found in /usr/share/common-licenses/GPL-2.
EOF
cat <<EOF | gzip -9n >"$doc/changelog.Debian.gz"
synguard ($DEBVER) unstable; urgency=medium

  * Built from the synguard source tree by make deb (packaging/build-deb.sh).

 -- $MAINTAINER  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF

# --- DEBIAN/ ---------------------------------------------------------------------
mkdir -p "$root/DEBIAN"
echo /etc/synguard/synguard.example.toml >"$root/DEBIAN/conffiles"
# What dh_python3 and dh_installsystemd would write: byte-compile on
# configure, remove the bytecode before the files go, reload systemd's units.
cat >"$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && command -v py3compile >/dev/null 2>&1; then
	py3compile -p synguard
fi
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
	# An upgrade: each running synguard@ restarts on the new version. During
	# a restart job the old controller hands its data path over (nothing
	# taken off, cookies already issued stay valid) and the new one takes
	# it over in place.
	if [ "$1" = configure ] && [ -n "$2" ]; then
		for unit in $(systemctl list-units --no-legend --plain --state=active 'synguard@*.service' | awk '{print $1}'); do
			systemctl try-restart "$unit" || true
		done
	fi
fi
EOF
cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if command -v py3clean >/dev/null 2>&1; then
	py3clean -p synguard
else
	dpkg -L synguard | sed -En -e '/^(.*)\/(.+)\.py$/s,,rm "\1/__pycache__/\2".*,e'
	find /usr/lib/python3/dist-packages/synguard -type d -name __pycache__ -empty -delete
fi
EOF
cat >"$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
EOF

find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f -exec chmod 0644 {} +
chmod 0755 "$root/usr/bin/synguard" "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles) |
  sort | xargs -d '\n' md5sum) >"$work/md5sums"
mv "$work/md5sums" "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/conffiles"

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
# Depends: what the code imports at run time besides the standard library
# (bcc, prometheus_client, pyroute2), each at the version Debian 12 has,
# which make demo's test bed passes with (tests/deploy/test_deb.py runs it).
# Debian 11 and Ubuntu 22.04 have older ones (and no tomllib): there
# deploy/install.sh's venv serves, with them from PyPI (the README says so).
cat >"$root/DEBIAN/control" <<EOF
Package: synguard
Version: $DEBVER
Architecture: all
Maintainer: $MAINTAINER
Installed-Size: $size
Depends: python3 (>= 3.11), python3:any, python3-bpfcc (>= 0.26), python3-prometheus-client (>= 0.16), python3-pyroute2 (>= 0.7.2)
Recommends: nftables
Suggests: bpftool
Section: net
Priority: optional
Description: $SUMMARY
 An XDP program answers SYNs to the protected ports at the NIC driver with
 SYN-ACKs whose ISS is a SYN cookie, and keeps the exact state of half-open
 connections in a syncache (a BPF map) while it has room. Returning ACKs are
 checked at the driver, and good ones are handed to the kernel as real
 request sockets, so the server accepts ordinary connections. A Python
 controller attaches it, retransmits SYN-ACKs, rotates the cookie keys and
 exports counters to Prometheus; a systemd unit runs one per interface.
 .
 Needs Linux >= 6.9 with BTF and the running kernel's headers, which bcc
 compiles the data path against. nftables lets it see firewall rules,
 iptables-nft ones included, that would drop handed-off connections.
EOF
chmod 0644 "$root/DEBIAN/control"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$OUT"
dpkg-deb --root-owner-group -Zxz --build "$root" "$DEB" >/dev/null
echo "$DEB"
