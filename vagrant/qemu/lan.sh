#!/usr/bin/env bash
# Three Debian 13 guests under QEMU on one LAN: server 198.18.50.10, client
# .11, attacker .12 (eth1, virtio-net, on a bridge), and the end-to-end suite
# (controller/lab/e2e.py --hosts ssh) driven across them over SSH, the way
# vagrant/e2e.sh drives the Vagrant VMs. As there, SSH comes in on another
# NIC (eth0, 198.18.60.0/24), so the LAN carries only what the suite counts.
# synguard attaches in native XDP mode to the server's virtio-net eth1.
#
# usage: vagrant/qemu/lan.sh [--suite trixie|bookworm|bullseye] [--dir DIR] [--accel tcg|kvm]
#                            [--nic virtio|vmxnet3|e1000e] [--topology T] [--sync] [-- E2E-OPTIONS]
#   --suite S      whose image: trixie (default, Debian 13) or bookworm (Debian 12)
#   --dir DIR      the image from build-image.sh (default $SYNGUARD_VM_DIR, else
#                  the suite's: /var/tmp/synguard-vm, /var/tmp/synguard-vm-deb12)
#   --accel        tcg (default, software emulation) or kvm
#   --nic M        the server's LAN NIC model: virtio (default; virtio-net, 4
#                  queue pairs), vmxnet3 (VMware's) or e1000e (Intel 82574L);
#                  the client and the attacker keep virtio-net
#   --topology T   plain (default): the server's eth1; bond-ab or bond-lacp:
#                  the server's eth1 and eth2 (both --nic) in bond0,
#                  active-backup or 802.3ad (the bridge between speaks no
#                  LACP); vlan: every guest's LAN on eth1.100 (VLAN 100), the
#                  server attaching there; vlan-parent: the same VLAN, the
#                  server attaching to eth1, which sees the tagged frames
#   --sync         copy this tree's controller/ and bpf/ into the server's
#                  /synguard (the image's copy of the tree, an editable
#                  install) first: no image rebuild for a controller change
#   E2E-OPTIONS    for controller/lab/e2e.py (default --rate 5000 --seconds 5,
#                  which the emulated attacker sent in full here); another
#                  --nic or --topology than the default adds --xdp-mode auto
#                  (vlan-parent: --server-if eth1) before them
#
# The bridges, the taps and the QEMU processes live in a network namespace
# made for the run and removed after it (the driver's address, 198.18.60.1,
# is there too); the guests have no other NIC, so nothing reaches any other
# network. Each guest boots from a throwaway overlay of DIR/img.raw.
# Consoles: DIR/lan-NAME.log. Exits 0 when the suite passes, 2 on bad input.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
. "$HERE/common.sh"
SUITE=${SYNGUARD_VM_SUITE:-trixie}
DIR=""
ACCEL=tcg
NIC=virtio
TOPOLOGY=plain
SYNC=0
while [ $# -gt 0 ]; do
  case "$1" in
    --suite|--dir|--accel|--nic|--topology)
      [ $# -gt 1 ] || { echo "lan.sh: $1 needs a value (try --help)" >&2; exit 2; } ;;
  esac
  case "$1" in
    --suite) SUITE="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    --accel) ACCEL="$2"; shift 2 ;;
    --nic) NIC="$2"; shift 2 ;;
    --topology) TOPOLOGY="$2"; shift 2 ;;
    --sync) SYNC=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "lan.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
vm_default_dir "$SUITE" >/dev/null || { echo "lan.sh: --suite trixie|bookworm|bullseye, not $SUITE" >&2; exit 2; }
# QEMU's device for each --nic.
declare -A DEVICE=([virtio]=virtio-net-pci [vmxnet3]=vmxnet3 [e1000e]=e1000e)
[ -n "$NIC" ] && [ -n "${DEVICE[$NIC]+set}" ] || { echo "lan.sh: --nic virtio|vmxnet3|e1000e, not $NIC" >&2; exit 2; }
case "$TOPOLOGY" in
  plain|bond-ab|bond-lacp|vlan|vlan-parent) ;;
  *) echo "lan.sh: --topology plain|bond-ab|bond-lacp|vlan|vlan-parent, not $TOPOLOGY" >&2; exit 2 ;;
esac
DEVICES=$(qemu-system-x86_64 -device help 2>/dev/null || true)
grep -q "^name \"${DEVICE[$NIC]}\"" <<<"$DEVICES" ||
  { echo "lan.sh: this qemu-system-x86_64 has no ${DEVICE[$NIC]} device (--nic $NIC)" >&2; exit 2; }
DIR=${DIR:-${SYNGUARD_VM_DIR:-$(vm_default_dir "$SUITE")}}
E2E=("$@"); [ ${#E2E[@]} -gt 0 ] || E2E=(--rate 5000 --seconds 5)
# Off the default, attach picks the mode (the suite shows which) and the
# server attaches where the topology says.
PRE=()
if [ "$NIC" != virtio ] || [ "$TOPOLOGY" != plain ]; then PRE+=(--xdp-mode auto); fi
if [ "$TOPOLOGY" = vlan-parent ]; then PRE+=(--server-if eth1); fi
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
# The server's LAN NIC is --nic's model (vmxnet3 and e1000e: one queue
# here), and with a bond topology it has a second one, eth2 (MAC :51:N).
# The guest names the NICs by MAC (build-image.sh's synguard-lan-up).
nics() {  # nics NAME: sets NICS, the QEMU options for the guest's NICs
  local name=$1 n=${HOSTNUM[$1]} model=virtio-net-pci lans=(lan) tap q mac i
  if [ "$name" = server ]; then
    model=${DEVICE[$NIC]}
    case "$TOPOLOGY" in bond-*) lans=(lan lan2) ;; esac
  fi
  ip -n $NS tuntap add dev "sgm-$name" mode tap
  ip -n $NS link set "sgm-$name" master br-mgmt up
  NICS=(-netdev "tap,id=mgmt,ifname=sgm-$name,script=no,downscript=no"
        -device "virtio-net-pci,netdev=mgmt,mac=52:54:00:18:60:$n")
  for i in "${!lans[@]}"; do
    tap="sgl$([ "$i" = 0 ] || echo $((i + 1)))-$name" mac="52:54:00:18:$((50 + i)):$n" q=""
    if [ "${CPUS[$name]}" -gt 1 ] && [ "$model" = virtio-net-pci ]; then q=multi_queue; fi
    ip -n $NS tuntap add dev "$tap" mode tap $q
    ip -n $NS link set "$tap" master br-lan up
    local lan="tap,id=${lans[$i]},ifname=$tap,script=no,downscript=no"
    local dev="$model,netdev=${lans[$i]},mac=$mac"
    if [ -n "$q" ]; then lan+=",queues=4"; dev+=",mq=on,vectors=10"; fi
    # 802.3ad takes a slave up only with a speed and duplex; virtio-net has
    # them only when the device says (without: "failed to get link
    # speed/duplex", both slaves down, and no ARP leaves the bond).
    if [ "${#lans[@]}" -gt 1 ] && [ "$model" = virtio-net-pci ]; then dev+=",speed=10000,duplex=full"; fi
    NICS+=(-netdev "$lan" -device "$dev")
  done
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
      for tap in "sgm-$name" "sgl-$name" "sgl2-$name"; do ip -n $NS link del "$tap" 2>/dev/null || true; done
      start $name
      boots=$((boots + 1))
    fi
    [ $((SECONDS - START)) -lt 900 ] || { echo "lan.sh: $name not reachable over SSH in 900 s (see $DIR/lan-$name.log)" >&2; exit 1; }
    sleep 3
  done
  echo "lan.sh: +$((SECONDS - START)) s  $name up: $("${IN[@]}" ssh -F "$CFG" $name 'uname -r; ip -br -4 addr show eth1' | tr -s ' \n' ' ')"
done
on() { "${IN[@]}" ssh -F "$CFG" -o BatchMode=yes -o LogLevel=ERROR "$@"; }
if [ "$SYNC" = 1 ]; then
  tar -C "$SRC" --exclude=__pycache__ -cf - controller bpf | on server 'tar -C /synguard -xf -'
  echo "lan.sh: +$((SECONDS - START)) s  server: this tree's controller/ and bpf/ in /synguard"
fi

# The topology: what the LAN address moves to. The bond's slaves must be
# down to be enslaved; bonding is loaded without its default bond0.
case "$TOPOLOGY" in
  bond-*)
    if [ "$TOPOLOGY" = bond-ab ]; then bond="mode active-backup"; else bond="mode 802.3ad lacp_rate fast"; fi
    on server "set -e; modprobe bonding max_bonds=0; ip addr flush dev eth1
      ip link set eth1 down; ip link set eth2 down
      ip link add bond0 type bond $bond miimon 100
      ip link set eth1 master bond0; ip link set eth2 master bond0
      ip link set bond0 up; ip addr add 198.18.50.10/24 dev bond0
      for i in \$(seq 60); do ip -br link show bond0 | grep -q LOWER_UP && break; sleep 0.5; done"
    echo "lan.sh: +$((SECONDS - START)) s  server: bond0 ($bond) of eth1, eth2 ($NIC): $(on server \
      "ip -br -4 addr show bond0; grep -E '^(Bonding Mode|Currently Active Slave|MII Status|Slave Interface|Aggregator ID|Number of ports|Partner Mac Address)' /proc/net/bonding/bond0" | tr -s ' \n' ' ')"
    ;;
  vlan*)
    for name in server client attacker; do
      on $name "set -e; modprobe 8021q; ip addr flush dev eth1
        ip link add link eth1 name eth1.100 type vlan id 100; ip link set eth1.100 up
        ip addr add 198.18.50.${HOSTNUM[$name]}/24 dev eth1.100"
    done
    echo "lan.sh: +$((SECONDS - START)) s  every guest's LAN on eth1.100 (VLAN 100)"
    ;;
esac
"${IN[@]}" python3 "$SRC/controller/lab/e2e.py" --hosts ssh --ssh-config "$CFG" \
  --synguard /synguard/.venv/bin/synguard "${PRE[@]}" "${E2E[@]}"
