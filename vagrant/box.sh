#!/usr/bin/env bash
# Make a Vagrant box (provider libvirt) from the image vagrant/qemu/build-image.sh
# built, and add it to Vagrant: synguard/trixie (Debian 13) or synguard/bookworm
# (Debian 12). vagrant/Vagrantfile boots it with SYNGUARD_BOX=synguard/SUITE.
#
# usage: vagrant/box.sh [--suite trixie|bookworm|bullseye] [--dir DIR] [--build-image] [--force]
#   --suite S      whose image (default $SYNGUARD_VM_SUITE or trixie)
#   --dir DIR      the image's directory (default as build-image.sh's)
#   --build-image  build the image first (build-image.sh) if DIR has none
#   --force        remake the box even if Vagrant has it from this image already
#
# Idempotent: with the box in `vagrant box list` made from the same build
# (DIR/build-id) by the same script, it only says so. Otherwise the image's
# root file system, through an overlay (DIR/rootfs is not changed), gets
# what Vagrant wants of a box: the user vagrant with Vagrant's insecure key
# and passwordless sudo, DHCP on eth0 from systemd-networkd (client id from
# the MAC: the guests have one machine-id until first boot), an empty
# /etc/machine-id; then an ext4 image (mkfs.ext4 -d) as qcow2, metadata.json
# and a box Vagrantfile that boots the image's kernel and initrd directly.
# Those two are copied to /var/lib/libvirt/boot/synguard-SUITE/, where the
# libvirt-qemu user can read them. The image carries everything
# deploy/install.sh installs (build-image.sh ran the provisioning's install),
# so provisioning needs no network. Needs root; no network.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/qemu/common.sh"
. "$HERE/qemu/chroot.sh"
SUITE=${SYNGUARD_VM_SUITE:-trixie}
DIR="" FORCE=0 BUILD=0
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) SUITE="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    --build-image) BUILD=1; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "box.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
vm_default_dir "$SUITE" >/dev/null || { echo "box.sh: --suite trixie|bookworm|bullseye, not $SUITE" >&2; exit 2; }
DIR=${DIR:-${SYNGUARD_VM_DIR:-$(vm_default_dir "$SUITE")}}
[ "$(id -u)" = 0 ] || { echo "box.sh: needs root (mounts, chroot)" >&2; exit 2; }
if [ "$BUILD" = 1 ] && [ ! -f "$DIR/build-id" ]; then
  "$HERE/qemu/build-image.sh" --suite "$SUITE" --dir "$DIR"
fi
for f in rootfs/usr vmlinuz initrd.img build-id; do
  [ -e "$DIR/$f" ] || { echo "box.sh: no $DIR/$f: run vagrant/qemu/build-image.sh --suite $SUITE first" >&2; exit 2; }
done
NAME=synguard/$SUITE
BOOT=/var/lib/libvirt/boot/synguard-$SUITE
STAMP="$(cat "$DIR/build-id") box.sh $(sha256sum "$0" | cut -c1-16)"
say() { echo "[$(date +%T)] box: $*"; }

if [ "$FORCE" = 0 ] && [ "$(cat "$DIR/box-stamp" 2>/dev/null)" = "$STAMP" ] &&
   vagrant box list 2>/dev/null | grep -q "^$NAME *(libvirt," &&
   [ -f "$BOOT/vmlinuz" ] && [ -f "$BOOT/initrd.img" ]; then
  say "$NAME is up to date (image $(cut -d' ' -f1-3 "$DIR/build-id"))"
  exit 0
fi

WORK="$DIR/box"
rm -rf "$WORK"
mkdir -p "$WORK/upper" "$WORK/work" "$WORK/merged" "$WORK/out"
# Vagrant's insecure public key, which it replaces on the first `vagrant up`.
KEYS=$(dpkg -L vagrant 2>/dev/null | grep -m 1 '/keys/vagrant\.pub$' || true)
[ -f "$KEYS" ] || { echo "box.sh: no keys/vagrant.pub of Vagrant's (apt install vagrant)" >&2; exit 2; }

# The guest's changes go to WORK/upper through an overlay of DIR/rootfs, in
# a mount namespace of this script's own: no mount outlives it.
say "$NAME from $(cat "$DIR/build-id")"
unshare --mount --propagation private -- bash -euo pipefail -c '
  . "$1"; ROOT=$2 W=$3 KEYS=$4
  M=$W/merged
  mount -t overlay -o "lowerdir=$ROOT,upperdir=$W/upper,workdir=$W/work" sg-box "$M"
  in_chroot "$M" sh -c "id vagrant >/dev/null 2>&1 || useradd -m -s /bin/bash -U vagrant"
  echo "vagrant ALL=(ALL) NOPASSWD: ALL" > "$M/etc/sudoers.d/vagrant"
  chmod 0440 "$M/etc/sudoers.d/vagrant"
  install -d -m 0700 "$M/home/vagrant/.ssh"
  install -m 0600 "$KEYS" "$M/home/vagrant/.ssh/authorized_keys"
  in_chroot "$M" chown -R vagrant:vagrant /home/vagrant/.ssh
  mkdir -p "$M/etc/systemd/network"
  printf "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n\n[DHCPv4]\nClientIdentifier=mac\n" \
    > "$M/etc/systemd/network/10-eth0.network"
  in_chroot "$M" systemctl enable systemd-networkd.service >/dev/null 2>&1
  : > "$M/etc/machine-id"
  rm -f "$M/var/lib/dbus/machine-id"
  echo synguard > "$M/etc/hostname"
  printf "127.0.0.1 localhost\n127.0.1.1 synguard\n::1 localhost\n" > "$M/etc/hosts"
  truncate -s 6G "$W/box.raw"
  mkfs.ext4 -q -F -L sg-root -d "$M" "$W/box.raw"
' box "$HERE/qemu/chroot.sh" "$DIR/rootfs" "$WORK" "$KEYS"
qemu-img convert -O qcow2 "$WORK/box.raw" "$WORK/out/box.img"
rm -rf "$WORK/box.raw" "$WORK/upper" "$WORK/work" "$WORK/merged"

install -d -m 0755 "$BOOT"
install -m 0644 "$DIR/vmlinuz" "$BOOT/vmlinuz"
install -m 0644 "$DIR/initrd.img" "$BOOT/initrd.img"
echo '{"provider": "libvirt", "format": "qcow2", "virtual_size": 6}' > "$WORK/out/metadata.json"
# panic=1: a guest that oopses while booting (now and then under software
# emulation) reboots, which libvirt lets it do, instead of hanging.
cat > "$WORK/out/Vagrantfile" <<RUBY
# synguard/$SUITE, made by vagrant/box.sh from $(cat "$DIR/build-id")
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.kernel = "$BOOT/vmlinuz"
    libvirt.initrd = "$BOOT/initrd.img"
    libvirt.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=1"
  end
end
RUBY
tar -C "$WORK/out" -cf "$WORK/synguard-$SUITE.box" metadata.json Vagrantfile box.img
rm -rf "$WORK/out"
say "vagrant box add $NAME ($(du -h --apparent-size "$WORK/synguard-$SUITE.box" | cut -f1))"
vagrant box add --force --name "$NAME" "$WORK/synguard-$SUITE.box"
rm -rf "$WORK"
echo "$STAMP" > "$DIR/box-stamp"
say "done: $NAME"
