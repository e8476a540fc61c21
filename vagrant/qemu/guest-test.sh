#!/bin/bash
# Runs in the guest at boot (synguard-guest-test.service, only when the kernel
# command line has synguard.vmtest=1; boot.sh sets it). Each step's output
# goes to /vmtest/STEP.log, and its exit status, wall time and last 40 lines
# to /vmtest/results.txt and the serial console. The unit powers off after.
#
# Kernel command line: synguard.vmtest.steps=attach,unit,demo,e2e,xdp,firewall,all and
# synguard.vmtest.timeout=SECONDS (per step).
PY=/synguard/.venv/bin/python

attach_only() {
  # The bcc compile, load and attach alone, on a veth in a new namespace,
  # timed to the controller's "protecting" line; then SIGINT detaches.
  ip netns add sg-att || return 1
  ip -n sg-att link add a0 type veth peer name a1
  ip -n sg-att link set a0 up; ip -n sg-att link set a1 up
  local log=/tmp/attach.out t0=$SECONDS
  nsenter --net=/run/netns/sg-att $PY -m synguard.cli attach a0 --ports 8080 --mode native --no-metrics > $log 2>&1 &
  local pid=$!
  while kill -0 $pid 2>/dev/null && ! grep -q protecting $log; do sleep 0.25; done
  cat $log
  echo "attach: $((SECONDS - t0)) s to the protecting line"
  ip -n sg-att -d link show a0 | grep -E 'prog/xdp' || { echo "no XDP on a0"; ip netns del sg-att; return 1; }
  kill -INT $pid; wait $pid; local rc=$?
  echo "controller exit=$rc"
  ip netns del sg-att
  return $rc
}
unit_only() {
  # synguard@IFACE under the guest's systemd, with its sandbox: started on
  # a veth in the root namespace, protected (status exits 0), no error in
  # the journal, stopped, nothing left on the interface.
  local ifc=sgu0 t0=$SECONDS rc=0
  ip link add $ifc type veth peer name sgu1 && ip link set $ifc up && ip link set sgu1 up || return 1
  udevadm settle
  mkdir -p /etc/synguard
  printf 'ports = [8080]\nmetrics = false\n' > /etc/synguard/$ifc.toml
  systemctl start synguard@$ifc
  until synguard status $ifc > /dev/null 2>&1 || ! systemctl is-active -q synguard@$ifc; do sleep 1; done
  echo "unit: $((SECONDS - t0)) s to protected"
  synguard status $ifc | head -4 || rc=1
  systemctl --no-pager status synguard@$ifc | head -12
  if journalctl -q -u synguard@$ifc -p err | grep .; then echo "errors in the journal"; rc=1; fi
  systemctl stop synguard@$ifc
  if ip -d link show $ifc | grep -q prog/xdp; then echo "XDP left on $ifc"; rc=1; fi
  synguard status $ifc > /dev/null 2>&1 && { echo "still protected after stop"; rc=1; }
  journalctl -q -u synguard@$ifc --no-pager | tail -6
  ip link del $ifc; rm -f /etc/synguard/$ifc.toml
  return $rc
}
if [ "${1:-}" = --attach-only ]; then attach_only; exit; fi
if [ "${1:-}" = --unit-only ]; then unit_only; exit; fi

OUT=/vmtest
rm -rf "$OUT"; mkdir -p "$OUT"
# Every line to a file and to the serial port, the port reopened per line:
# the serial getty's vhangup() breaks descriptors opened before it (EIO).
exec > >(while IFS= read -r l; do
           printf '%s\n' "$l" >> "$OUT/console.log"
           printf '%s\r\n' "$l" 2>/dev/null > /dev/ttyS0 || true
         done) 2>&1

arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | tail -n 1; }
STEPS=$(arg synguard.vmtest.steps); STEPS=${STEPS:-attach,demo,e2e,xdp}
TMO=$(arg synguard.vmtest.timeout); TMO=${TMO:-1200}
cd /synguard || exit 1

echo "VMTEST-BEGIN $(date -u +%FT%TZ)"
{
  echo "kernel: $(uname -r), $(. /etc/os-release; echo "$PRETTY_NAME")"
  echo "cpus: $(nproc), memory: $(free -m | awk '/Mem:/{print $2}') MiB"
  echo "python, bcc: $($PY -c 'import sys, bcc; print(sys.version.split()[0], bcc.__version__)' 2>&1)"
  echo "steps: $STEPS, each within ${TMO} s; uptime $(cut -d' ' -f1 /proc/uptime) s"
} | tee "$OUT/results.txt"

run() {  # run NAME CMD...
  local name=$1 t0=$SECONDS rc; shift
  echo "VMTEST-STEP-START $name"
  timeout --kill-after=30 "$TMO" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  {
    echo
    echo "== $name: $*"
    echo "exit=$rc wall=$((SECONDS - t0))s"
    echo "-- last 40 lines:"
    tail -n 40 "$OUT/$name.log"
  } | tee -a "$OUT/results.txt"
  echo "VMTEST-STEP-END $name exit=$rc"
}

IFS=, read -ra want <<< "$STEPS"
for s in "${want[@]}"; do
  case "$s" in
    attach) run attach "$0" --attach-only ;;
    unit)   run unit "$0" --unit-only ;;
    demo)   run demo $PY -m synguard.lab.demo ;;
    e2e)    run e2e $PY -m synguard.lab.e2e ;;
    xdp)    run pytest-xdp $PY -m pytest -q -p no:cacheprovider tests/unit/test_xdp.py ;;
    # Debian's nf_conntrack is a module: its kfuncs load through fd_array.
    firewall) run pytest-firewall $PY -m pytest -q -p no:cacheprovider tests/unit/test_tc.py tests/netns/test_netns_firewall.py ;;
    all)    run pytest-all $PY -m pytest -q -ra -p no:cacheprovider tests ;;
    *)      echo "unknown step $s" | tee -a "$OUT/results.txt"; echo "exit=2" >> "$OUT/results.txt" ;;
  esac
done
echo "VMTEST-END uptime $(cut -d' ' -f1 /proc/uptime) s"
sync
