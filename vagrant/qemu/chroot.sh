# Sourced by build-image.sh and vagrant/box.sh: run commands in a guest's
# root file system on this machine without changing this machine.
#
# The chroot gets a /dev of its own (a small tmpfs with the nodes package
# scripts use and a private devpts instance), never this machine's /dev
# bind-mounted: through such a bind mount Debian 13's tmpfiles rule for
# /dev/kvm (run by the systemd package's scripts) once set the host's
# /dev/kvm to mode 0660 and the chroot's kvm group, after which libvirt
# re-probed QEMU on every call. /sys is mounted read-only. Everything runs in
# a mount namespace of its own, so no mount outlives the command, even when
# it fails or is killed.

# chroot_mount ROOT: proc, a read-only sysfs and the private /dev under ROOT
# (in the current mount namespace: in_chroot calls it in a new one).
chroot_mount() {
  local root=$1 n
  mount -t proc proc "$root/proc"
  mount -t sysfs -o ro sysfs "$root/sys"
  mount -t tmpfs -o mode=0755,nosuid,size=16m sg-chroot-dev "$root/dev"
  for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
    # shellcheck disable=SC2086
    set -- $n
    mknod -m 0666 "$root/dev/$1" c "$2" "$3"
  done
  mkdir -m 0755 "$root/dev/pts"
  mkdir -m 1777 "$root/dev/shm"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
  ln -s pts/ptmx "$root/dev/ptmx"
  ln -s /proc/self/fd "$root/dev/fd"
  ln -s /proc/self/fd/0 "$root/dev/stdin"
  ln -s /proc/self/fd/1 "$root/dev/stdout"
  ln -s /proc/self/fd/2 "$root/dev/stderr"
}

# in_chroot ROOT COMMAND...: COMMAND run by chroot ROOT, with chroot_mount's
# mounts in a private mount namespace that ends with it.
in_chroot() {
  unshare --mount --propagation private -- bash -c \
    "set -e; $(declare -f chroot_mount); chroot_mount \"\$0\"; exec chroot \"\$0\" \"\$@\"" "$@"
}

# host_dev_state: mode, owner and group of the device nodes whose permissions
# tmpfiles and udev rules set (those present here), one line each, to compare
# before and after a build.
host_dev_state() {
  local f
  for f in /dev/kvm /dev/net/tun /dev/vhost-net /dev/vhost-vsock /dev/fuse /dev/loop-control \
           /dev/null /dev/zero /dev/random /dev/urandom /dev/tty /dev/ptmx /dev/pts/ptmx; do
    if [ -e "$f" ]; then stat -c '%n %a %u:%g' "$f"; fi
  done
}
