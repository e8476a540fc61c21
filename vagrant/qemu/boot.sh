#!/usr/bin/env bash
# Boot the image from build-image.sh under QEMU and run synguard's tests in
# the guest (guest-test.sh), or give a shell on its serial console.
#
# usage: vagrant/qemu/boot.sh [--suite trixie|bookworm|bullseye] [--dir DIR] [--steps LIST]
#                             [--accel tcg|kvm] [--timeout S] [--step-timeout S] [--interactive]
#   --suite S        whose image: trixie (default, Debian 13), bookworm (Debian 12)
#                    or bullseye (Debian 11)
#   --dir DIR        the image from build-image.sh (default $SYNGUARD_VM_DIR, else
#                    the suite's: /var/tmp/synguard-vm, /var/tmp/synguard-vm-deb12,
#                    /var/tmp/synguard-vm-deb11)
#   --steps LIST     comma list: attach, unit (synguard@ under systemd), demo, e2e,
#                    xdp (tests/unit/test_xdp.py), firewall
#                    (tests/unit/test_tc.py, tests/netns/test_netns_firewall.py),
#                    all (the whole pytest suite); default attach,demo,e2e,xdp
#   --accel tcg      (default) software emulation: 2 vCPUs, 4 GiB; slow (bcc's
#                    compile takes about a minute) but needs nothing from the host
#   --accel kvm      hardware virtualisation, where the host's KVM can boot it
#   --timeout S      kill the guest after S seconds (default 3600)
#   --step-timeout S each step's limit inside the guest (default 1200)
#   --interactive    no tests: the serial console on this terminal, logged in
#                    as root (leave with Ctrl-A x)
#
# The guest has no NIC (-nic none): every test runs in network namespaces
# inside it and nothing leaves it. Writes DIR/serial-STAMP.log (the console)
# and copies the guest's /vmtest out of the image to DIR/results-STAMP/.
# Exits 0 only if every step asked for ended with exit=0 and the guest's
# kernel reported no soft lockup, BUG, oops, panic or RCU stall
# (verdict.py): a step that never ended fails, and a guest whose kernel
# reports one is stopped at once.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
SUITE=${SYNGUARD_VM_SUITE:-trixie}
DIR=""
ACCEL=tcg STEPS=attach,demo,e2e,xdp TIMEOUT=3600 STEP_TMO=1200 INTER=0
while [ $# -gt 0 ]; do
  case "$1" in
    --suite|--dir|--steps|--accel|--timeout|--step-timeout)
      [ $# -ge 2 ] || { echo "boot.sh: $1 needs a value (try --help)" >&2; exit 2; } ;;
  esac
  case "$1" in
    --suite) SUITE="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --accel) ACCEL="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --step-timeout) STEP_TMO="$2"; shift 2 ;;
    --interactive) INTER=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "boot.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
why=$("$HERE/verdict.py" --check "$STEPS" 2>&1) || { echo "boot.sh: $why" >&2; exit 2; }
vm_default_dir "$SUITE" >/dev/null || { echo "boot.sh: --suite trixie|bookworm|bullseye, not $SUITE" >&2; exit 2; }
DIR=${DIR:-${SYNGUARD_VM_DIR:-$(vm_default_dir "$SUITE")}}
qemu_base boot.sh "$ACCEL"
APPEND=$QEMU_APPEND
QEMU=("${QEMU_BASE[@]}" -smp 2 -m 4096 -nic none
      -drive "file=$DIR/img.raw,format=raw,if=virtio,cache=unsafe")

if [ "$INTER" = 1 ]; then
  exec "${QEMU[@]}" -nographic -serial mon:stdio -append "$APPEND"
fi

STAMP=$(date +%Y%m%d-%H%M%S)-$ACCEL
LOG="$DIR/serial-$STAMP.log"
APPEND="$APPEND synguard.vmtest=1 synguard.vmtest.steps=$STEPS synguard.vmtest.timeout=$STEP_TMO"
echo "boot.sh: $ACCEL, steps $STEPS, console in $LOG"
START=$SECONDS
"${QEMU[@]}" -serial "file:$LOG" -append "$APPEND" &
QPID=$!
MNT=""
# On any exit (an error too) the guest is stopped and the image unmounted;
# Ctrl-C stops the guest and still reads back what it wrote.
cleanup() {
  kill $QPID 2>/dev/null || true
  if [ -n "$MNT" ]; then
    if mountpoint -q "$MNT"; then umount "$MNT"; fi
    rmdir "$MNT"
  fi
}
trap cleanup EXIT
trap 'kill $QPID 2>/dev/null || true' INT TERM

# Print each milestone of the console once, with the seconds since start.
declare -A seen=()
mark() {  # mark LABEL REGEX
  if [ -z "${seen[$1]:-}" ] && grep -aqE "$2" "$LOG" 2>/dev/null; then
    seen[$1]=1; echo "boot.sh: +$((SECONDS - START)) s  $1"
  fi
}
while kill -0 $QPID 2>/dev/null; do
  mark "systemd running" 'systemd\[1\]|Welcome to'
  mark "tests started" 'VMTEST-BEGIN'
  while IFS= read -r line; do mark "${line#VMTEST-STEP-END }" "$line"; done \
    < <(grep -aoE 'VMTEST-STEP-END [a-z0-9-]+ exit=[0-9]+' "$LOG" 2>/dev/null)
  mark "tests finished" 'VMTEST-END'
  if oops=$("$HERE/verdict.py" --watch "$LOG"); then :; else
    echo "boot.sh: +$((SECONDS - START)) s  the guest's kernel: $oops; stopping the guest"; kill $QPID; break
  fi
  if [ $((SECONDS - START)) -gt "$TIMEOUT" ]; then
    echo "boot.sh: timeout ${TIMEOUT} s, stopping the guest"; kill $QPID; break
  fi
  sleep 1
done
wait $QPID || true
echo "boot.sh: guest off after $((SECONDS - START)) s"

# The results, off the guest's disk (read-only loop mount, no journal replay).
MNT=$(mktemp -d)
mount -o ro,loop,noload "$DIR/img.raw" "$MNT"
if [ -d "$MNT/vmtest" ]; then
  cp -a "$MNT/vmtest" "$DIR/results-$STAMP"
fi
umount "$MNT"; rmdir "$MNT"; MNT=""
R="$DIR/results-$STAMP/results.txt"
if [ -f "$R" ]; then
  echo "boot.sh: results in $DIR/results-$STAMP"
  grep -E '^(kernel:|python, bcc:|== |exit=|verdict:|[0-9]+ (passed|failed|errors?)\b)' "$R" || true
fi
# pipefail: the script's status is verdict.py's.
"$HERE/verdict.py" "$STEPS" "$R" "$LOG" | sed 's/^/boot.sh: /'
