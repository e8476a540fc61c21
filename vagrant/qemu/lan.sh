#!/usr/bin/env bash
# Three Debian 13 guests under QEMU on one LAN: server 198.18.50.10, client
# .11, attacker .12 (eth1, virtio-net, on a bridge), and the end-to-end suite
# (controller/lab/e2e.py --hosts ssh) driven across them over SSH, the way
# vagrant/e2e.sh drives the Vagrant VMs. As there, SSH comes in on another
# NIC (eth0, 198.18.60.0/24), so the LAN carries only what the suite counts.
# synguard attaches in native XDP mode to the server's virtio-net eth1.
#
# usage: vagrant/qemu/lan.sh [--suite trixie|bookworm|bullseye] [--dir DIR] [--accel tcg|kvm] [-- E2E-OPTIONS]
#   --suite S      whose image: trixie (default, Debian 13) or bookworm (Debian 12)
#   --dir DIR      the image from build-image.sh (default $SYNGUARD_VM_DIR, else
#                  the suite's: /var/tmp/synguard-vm, /var/tmp/synguard-vm-deb12)
#   --accel        tcg (default, software emulation) or kvm
#   E2E-OPTIONS    for controller/lab/e2e.py (default --rate 5000 --seconds 5,
#                  which the emulated attacker sent in full here)
#
# The bridges, the taps and the QEMU processes live in a network namespace
# made for the run and removed after it (the driver's address, 198.18.60.1,
# is there too); the guests have no other NIC, so nothing reaches any other
# network. Each guest boots from a throwaway overlay of DIR/img.raw.
# Consoles: DIR/lan-NAME.log. Exits 0 when the suite passes.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
. "$HERE/common.sh"
SUITE=${SYNGUARD_VM_SUITE:-trixie}
DIR=""
ACCEL=tcg
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) SUITE="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    --accel) ACCEL="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "lan.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
vm_default_dir "$SUITE" >/dev/null || { echo "lan.sh: --suite trixie|bookworm|bullseye, not $SUITE" >&2; exit 2; }
DIR=${DIR:-${SYNGUARD_VM_DIR:-$(vm_default_dir "$SUITE")}}
E2E=("$@"); [ ${#E2E[@]} -gt 0 ] || E2E=(--rate 5000 --seconds 5)
qemu_base lan.sh "$ACCEL" id_ed25519

NS=synguard-vmlan
IN=(nsenter --net=/run/netns/$NS)
CFG="$DIR/lan-ssh-config"
declare -A HOSTNUM=([server]=10 [client]=11 [attacker]=12)
declare -A CPUS=([server]=2 [client]=1 [attacker]=1) PID=()
cleanup() {
  echo "lan.sh: stopping the guests"
  # The SSH connections kept open for the suite (ControlMaster) first.
  for name in server client attacker; do
    if [ -S "$DIR/ssh-ctl-198.18.60.${HOSTNUM[$name]}" ]; then
      "${IN[@]}" ssh -F "$CFG" -O exit $name 2>/dev/null || true
    fi
  done
  for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PID[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del $NS 2>/dev/null || true
  rm -f "$DIR"/lan-*.qcow2 "$DIR"/ssh-ctl-*
}
trap cleanup EXIT
ip netns del $NS 2>/dev/null || true
ip netns add $NS
ip -n $NS link set lo up
for br in br-lan br-mgmt; do ip -n $NS link add $br type bridge; ip -n $NS link set $br up; done
ip -n $NS addr add 198.18.60.1/24 dev br-mgmt

# eth0, management: one queue. eth1, the LAN: on the server 4 queue pairs for
# 2 vCPUs, as virtio-net takes its XDP_TX queues beyond the ones in use (one
# per CPU). Host offloads stay on, as under Vagrant: virtio-net turns them
# off itself when XDP is attached (the device offers CTRL_GUEST_OFFLOADS).
nics() {  # nics NAME: sets NICS, the QEMU options for the guest's two NICs
  local n=${HOSTNUM[$1]} q=""
  if [ "${CPUS[$1]}" -gt 1 ]; then q=multi_queue; fi
  ip -n $NS tuntap add dev "sgm-$1" mode tap
  ip -n $NS tuntap add dev "sgl-$1" mode tap $q
  ip -n $NS link set "sgm-$1" master br-mgmt up
  ip -n $NS link set "sgl-$1" master br-lan up
  local lan="tap,id=lan,ifname=sgl-$1,script=no,downscript=no"
  local dev="virtio-net-pci,netdev=lan,mac=52:54:00:18:50:$n"
  if [ -n "$q" ]; then lan+=",queues=4"; dev+=",mq=on,vectors=10"; fi
  NICS=(-netdev "tap,id=mgmt,ifname=sgm-$1,script=no,downscript=no"
        -device "virtio-net-pci,netdev=mgmt,mac=52:54:00:18:60:$n"
        -netdev "$lan" -device "$dev")
}
start() {  # start NAME: boot the guest from a fresh overlay of the image
  local name=$1 n=${HOSTNUM[$1]}
  nics "$name"
  qemu-img create -q -f qcow2 -F raw -b "$DIR/img.raw" "$DIR/lan-$name.qcow2"
  "${IN[@]}" "${QEMU_BASE[@]}" -smp "${CPUS[$name]}" -m 2048 \
    -drive "file=$DIR/lan-$name.qcow2,format=qcow2,if=virtio,cache=unsafe" \
    "${NICS[@]}" -serial "file:$DIR/lan-$name.log" \
    -append "$QEMU_APPEND synguard.lan=$name,198.18.60.$n/24,198.18.50.$n/24" &
  PID[$name]=$!
}
START=$SECONDS
for name in server client attacker; do start $name; done

cat > "$CFG" <<CFG
Host server
  HostName 198.18.60.10
Host client
  HostName 198.18.60.11
Host attacker
  HostName 198.18.60.12
Host *
  User root
  IdentityFile $DIR/id_ed25519
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  ConnectTimeout 10
  ControlMaster auto
  ControlPath $DIR/ssh-ctl-%h
  ControlPersist 600
CFG
# Under software emulation a guest now and then oopses while booting (an
# int3 left in the kernel text as it patches itself with more than one
# vCPU); it powers off (panic=1, -no-reboot) and is booted once more.
for name in server client attacker; do
  boots=1
  until "${IN[@]}" ssh -F "$CFG" -o BatchMode=yes -o LogLevel=ERROR $name true 2>/dev/null; do
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      wait "${PID[$name]}" || true
      [ $boots -lt 3 ] || { echo "lan.sh: $name stopped $boots times while booting (see $DIR/lan-$name.log*)" >&2; exit 1; }
      mv "$DIR/lan-$name.log" "$DIR/lan-$name.log.$boots"
      echo "lan.sh: +$((SECONDS - START)) s  $name stopped while booting ($(grep -a -m 1 -oE 'Oops: [^[]*|Kernel panic[^[]*' "$DIR/lan-$name.log.$boots" || echo no oops on its console)); booting it again"
      ip -n $NS link del "sgm-$name"; ip -n $NS link del "sgl-$name"
      start $name
      boots=$((boots + 1))
    fi
    [ $((SECONDS - START)) -lt 900 ] || { echo "lan.sh: $name not reachable over SSH in 900 s (see $DIR/lan-$name.log)" >&2; exit 1; }
    sleep 3
  done
  echo "lan.sh: +$((SECONDS - START)) s  $name up: $("${IN[@]}" ssh -F "$CFG" $name 'uname -r; ip -br -4 addr show eth1' | tr -s ' \n' ' ')"
done
"${IN[@]}" python3 "$SRC/controller/lab/e2e.py" --hosts ssh --ssh-config "$CFG" \
  --synguard /synguard/.venv/bin/synguard "${E2E[@]}"
