# Sourced by build-image.sh, boot.sh, lan.sh and vagrant/box.sh: where each
# Debian suite's image goes, the image's files and QEMU's common options.

# vm_default_dir SUITE: the image directory of trixie (Debian 13), bookworm
# (Debian 12) or bullseye (Debian 11, standing in for Ubuntu 22.04) unless
# --dir or SYNGUARD_VM_DIR says otherwise, so that the images can exist side
# by side; fails for another suite.
vm_default_dir() {
  case "$1" in
    trixie) echo /var/tmp/synguard-vm ;;
    bookworm) echo /var/tmp/synguard-vm-deb12 ;;
    bullseye) echo /var/tmp/synguard-vm-deb11 ;;
    *) return 1 ;;
  esac
}

# qemu_base NAME ACCEL FILE...: exits 2 unless each DIR/FILE exists, then sets
# QEMU_BASE to the qemu-system-x86_64 options every guest here shares.
qemu_base() {
  local who=$1 accel=$2 f acc; shift 2
  for f in img.raw vmlinuz initrd.img "$@"; do
    [ -f "$DIR/$f" ] || { echo "$who: no $DIR/$f: run vagrant/qemu/build-image.sh first" >&2; exit 2; }
  done
  case "$accel" in
    kvm) acc=(-enable-kvm -cpu host) ;;
    tcg) acc=(-accel tcg,thread=multi -cpu max) ;;
    *) echo "$who: --accel tcg|kvm" >&2; exit 2 ;;
  esac
  QEMU_BASE=(qemu-system-x86_64 "${acc[@]}" -nodefaults -no-reboot -display none -monitor none
             -kernel "$DIR/vmlinuz" -initrd "$DIR/initrd.img")
}
# The kernel command line every guest starts from. panic=1 with -no-reboot:
# a guest that panics stops QEMU instead of hanging until a timeout.
# loglevel=5 keeps warnings, oopses and panics on the console but not the
# info lines (bridge ports...) that would break into the tests' own lines.
QEMU_APPEND="root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=1 loglevel=5"
