#!/usr/bin/env bash
# Build a Debian disk image with synguard installed, for boot.sh and lan.sh
# (and vagrant/box.sh): a real kernel to test on where Vagrant cannot run.
#
# usage: vagrant/qemu/build-image.sh [--suite trixie|bookworm|bullseye] [--dir DIR] [--reuse-rootfs]
#   --suite S        trixie (default, Debian 13, Linux 6.12), bookworm (Debian 12,
#                    Linux 6.1, bcc 0.26) or bullseye (Debian 11, Linux 5.10,
#                    bcc 0.18, Python 3.9); default $SYNGUARD_VM_SUITE or trixie
#   --dir DIR        where the image goes (default $SYNGUARD_VM_DIR, else
#                    /var/tmp/synguard-vm for trixie, /var/tmp/synguard-vm-deb12
#                    for bookworm, /var/tmp/synguard-vm-deb11 for bullseye;
#                    about 3 GiB)
#   --reuse-rootfs   keep DIR/rootfs from an earlier build (no debootstrap):
#                    recopy this tree, rerun apt and deploy/install.sh, remake
#                    the image (under a minute instead of about 3)
#
# Writes DIR/rootfs/ (the tree), DIR/img.raw (sparse 6 GiB ext4, the guests'
# disk: boot.sh boots it, lan.sh gives each guest an overlay of it),
# DIR/vmlinuz and DIR/initrd.img (for qemu -kernel), DIR/id_ed25519, the
# key lan.sh logs in with (root only, by key), and DIR/build-id. Needs root,
# and deb.debian.org and PyPI from this machine: the guests get no way out,
# so everything is installed here, in a chroot with a /dev of its own
# (chroot.sh): the build leaves this machine's /dev as it was, and checks it.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
. "$HERE/common.sh"
. "$HERE/chroot.sh"
SUITE=${SYNGUARD_VM_SUITE:-trixie}
DIR=""
REUSE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) SUITE="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    --reuse-rootfs) REUSE=1; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
vm_default_dir "$SUITE" >/dev/null || { echo "build-image.sh: --suite trixie|bookworm|bullseye, not $SUITE" >&2; exit 2; }
DIR=${DIR:-${SYNGUARD_VM_DIR:-$(vm_default_dir "$SUITE")}}
[ "$(id -u)" = 0 ] || { echo "build-image.sh: needs root (debootstrap, chroot)" >&2; exit 2; }
mkdir -p "$DIR"
ROOT="$DIR/rootfs"
say() { echo "[$(date +%T)] build-image: $*"; }

# The guest's packages: the kernel and its headers (bcc compiles against
# /lib/modules/$(uname -r)/build), bcc for python3, what synguard and its
# tests call (ip, tc, ethtool, trafgen, nft, bpftool), systemd as init for
# the serial console and the units below, and sshd and sudo for lan.sh (the
# e2e suite drives its hosts with `ssh HOST sudo sh -c ...`), rsync for
# Vagrant's synced folder (vagrant/box.sh). The same names in both suites.
PKGS="linux-image-amd64 linux-headers-amd64 python3 python3-bpfcc python3-venv
      iproute2 ethtool netsniff-ng nftables iptables make util-linux procps systemd-sysv
      bpftool kmod ca-certificates openssh-server sudo rsync"

# policy-rc.d stops package scripts from starting services (nftables...) on
# this machine while they are installed in the chroot.
no_services() { printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod +x "$ROOT/usr/sbin/policy-rc.d"; }
# The build must not change this machine's device nodes: compared at the end.
DEV_BEFORE=$(host_dev_state)

if [ "$REUSE" = 0 ] || [ ! -d "$ROOT/usr" ]; then
  rm -rf "$ROOT"
  say "debootstrap $SUITE"
  unshare --mount --propagation private -- \
    debootstrap --variant=minbase "$SUITE" "$ROOT" http://deb.debian.org/debian
else
  say "reusing $ROOT"
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
no_services
say "apt-get install: kernel, headers, bcc, tools"
in_chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get update -q
# shellcheck disable=SC2086
in_chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PKGS

# synguard at /synguard (without this tree's venv and .git), installed by its
# own installer while PyPI is reachable; and as Vagrant's provisioning
# installs it (/opt/synguard/venv, /usr/local/bin/synguard, the unit), so
# that the provisioning run again in a guest finds everything and needs no
# network. In the chroot `uname -r` is this machine's kernel; in the guest
# the headers from linux-headers-amd64 are found by their own version.
# pip is lent this machine's CA bundle (it may sit behind a TLS-inspecting
# proxy), as PIP_CERT and in place of the guest's own bundle (Debian 12's
# pip 23.0.1 reads that one whatever PIP_CERT or --cert say); none of it is
# left in the image.
rm -rf "$ROOT/synguard"
mkdir "$ROOT/synguard"
tar -C "$SRC" --exclude=./.venv --exclude=./.git --exclude=./build --exclude='*.egg-info' \
    --exclude=.vagrant --exclude=__pycache__ -cf - . | tar -C "$ROOT/synguard" -xf -
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/tmp/host-ca.crt"
GUEST_CA="$ROOT/etc/ssl/certs/ca-certificates.crt"
[ -e "$GUEST_CA.synguard-build" ] || mv "$GUEST_CA" "$GUEST_CA.synguard-build"  # kept by a failed build
cp /etc/ssl/certs/ca-certificates.crt "$GUEST_CA"
no_services
say "deploy/install.sh --venv /synguard/.venv --dev (in the chroot)"
in_chroot "$ROOT" env -u PIP_FIND_LINKS PIP_CERT=/tmp/host-ca.crt SSL_CERT_FILE=/tmp/host-ca.crt \
  PIP_CONFIG_FILE=/dev/null bash -c 'cd /synguard && deploy/install.sh --venv /synguard/.venv --dev &&
    deploy/install.sh --link --systemd --extra-apt netsniff-ng'
mv "$GUEST_CA.synguard-build" "$GUEST_CA"
rm -f "$ROOT/usr/sbin/policy-rc.d" "$ROOT/tmp/host-ca.crt"

say "configuring the guest"
echo sg-vm > "$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 sg-vm\n::1 localhost\n' > "$ROOT/etc/hosts"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$ROOT/etc/fstab"
chroot "$ROOT" passwd -d root >/dev/null
# Root autologin on the serial console, for boot.sh --interactive.
mkdir -p "$ROOT/etc/systemd/system/serial-getty@ttyS0.service.d"
cat > "$ROOT/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'UNIT'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 - $TERM
UNIT
chroot "$ROOT" systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1 || true

# Root logs in over SSH with DIR/id_ed25519 only (sshd's default for root is
# key-only). The guests share the image's host keys: lan.sh does not pin them.
[ -f "$DIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C synguard-vm -f "$DIR/id_ed25519"
install -d -m 0700 "$ROOT/root/.ssh"
install -m 0600 "$DIR/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"

# On lan.sh's guests: name and addresses from the kernel command line,
# synguard.lan=NAME,MGMT/LEN,LAN/LEN: eth0 carries SSH, eth1 only the tests.
# The NICs are named by their MACs (lan.sh's 52:54:00:18:60:N management,
# :50:N the LAN, :51:N a second LAN NIC): with net.ifnames=0 the kernel
# names them in the order their drivers probe, and a LAN NIC of another
# model (vmxnet3, e1000e: lan.sh --nic) may come before virtio-net's eth0.
cat > "$ROOT/usr/local/sbin/synguard-lan-up" <<'SH'
#!/bin/sh
set -e
want() {  # want MAC: the name lan.sh's MAC plan gives that NIC, or nothing
  case "$1" in
    52:54:00:18:60:*) echo eth0 ;;
    52:54:00:18:50:*) echo eth1 ;;
    52:54:00:18:51:*) echo eth2 ;;
  esac
}
# Both of eth0 and eth1 probed (udev loads the drivers meanwhile): 60 s at most.
i=0
until [ "$(cat /sys/class/net/*/address | grep -c '^52:54:00:18:[56]0:')" -ge 2 ] || [ $i -ge 120 ]; do
  sleep 0.5; i=$((i + 1))
done
# Out of the way first, then each to its name: a swap needs both steps.
for d in /sys/class/net/*; do
  n=${d##*/} w=$(want "$(cat "$d/address")")
  if [ -n "$w" ] && [ "$n" != "$w" ]; then ip link set "$n" name "sg-$w"; fi
done
for w in eth0 eth1 eth2; do
  if [ -e "/sys/class/net/sg-$w" ]; then ip link set "sg-$w" name "$w"; fi
done
v=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^synguard\.lan=//p')
hostname "${v%%,*}"
v=${v#*,}
ip link set eth0 up
ip addr add "${v%%,*}" dev eth0
ip link set eth1 up
ip addr add "${v#*,}" dev eth1
SH
chmod 0755 "$ROOT/usr/local/sbin/synguard-lan-up"
cat > "$ROOT/etc/systemd/system/synguard-lan.service" <<'UNIT'
[Unit]
Description=synguard test LAN address (synguard.lan= on the kernel command line)
ConditionKernelCommandLine=synguard.lan
Before=ssh.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/synguard-lan-up
[Install]
WantedBy=multi-user.target
UNIT
chroot "$ROOT" systemctl enable synguard-lan.service >/dev/null 2>&1

# The test run: a oneshot unit that only runs with synguard.vmtest=1 on the
# kernel command line (boot.sh sets it), then powers the guest off.
install -m 0755 "$HERE/guest-test.sh" "$ROOT/usr/local/sbin/synguard-guest-test"
cat > "$ROOT/etc/systemd/system/synguard-guest-test.service" <<'UNIT'
[Unit]
Description=synguard tests in the guest (synguard.vmtest=1 on the kernel command line)
ConditionKernelCommandLine=synguard.vmtest=1
After=multi-user.target
[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
ExecStart=/usr/local/sbin/synguard-guest-test
ExecStopPost=/usr/bin/systemctl --no-block poweroff
TimeoutStartSec=infinity
[Install]
WantedBy=multi-user.target
UNIT
chroot "$ROOT" systemctl enable synguard-guest-test.service >/dev/null 2>&1
rm -rf "$ROOT/vmtest"

KIMG=$(find "$ROOT/boot" -name 'vmlinuz-*' | sort -V | tail -n 1)
KVER=${KIMG##*/vmlinuz-}
chroot "$ROOT" test -e "/lib/modules/$KVER/build/include" || { echo "build-image.sh: no headers for $KVER in the image" >&2; exit 1; }
cp "$KIMG" "$DIR/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$DIR/initrd.img"
say "guest kernel $KVER"

# The image straight from the tree: mkfs -d needs no loop mount.
rm -f "$DIR/img.raw"
truncate -s 6G "$DIR/img.raw"
mkfs.ext4 -q -F -L sg-root -d "$ROOT" "$DIR/img.raw"
echo "$SUITE $KVER $(date -u +%Y%m%dT%H%M%SZ)" > "$DIR/build-id"

DEV_AFTER=$(host_dev_state)
if [ "$DEV_AFTER" != "$DEV_BEFORE" ]; then
  echo "build-image.sh: this machine's /dev changed during the build:" >&2
  diff <(echo "$DEV_BEFORE") <(echo "$DEV_AFTER") >&2 || true
  exit 1
fi
say "this machine's /dev unchanged: $(echo "$DEV_AFTER" | grep '^/dev/kvm ' || echo 'no /dev/kvm')"
say "done ($SUITE, $KVER): $DIR/img.raw, $DIR/vmlinuz, $DIR/initrd.img"
