#!/usr/bin/env bash
# Run synguard's end-to-end suite across the three Vagrant VMs.
#
# usage: vagrant/e2e.sh [--provider libvirt|virtualbox] [--no-sync] [--halt] [--destroy] [-- E2E-OPTIONS]
#   --provider P   the Vagrant provider (default: Vagrant's own choice)
#   --no-sync      skip copying this tree to the VMs and re-running install.sh
#   --halt         halt the VMs afterwards; --destroy removes them
#   E2E-OPTIONS    passed to controller/lab/e2e.py, e.g. --rate 50000 --seconds 10
#
# Brings the VMs up if needed (the first time provisions them: a few minutes),
# copies the current tree and reinstalls it, then drives the suite from here
# over `vagrant ssh`. Exits 0 on PASS.
set -euo pipefail
cd "$(dirname "$0")"

PROVIDER=()
SYNC=1
AFTER=""
while [ $# -gt 0 ]; do
  case "$1" in
    --provider) PROVIDER=(--provider "$2"); shift 2 ;;
    --no-sync) SYNC=0; shift ;;
    --halt) AFTER=halt; shift ;;
    --destroy) AFTER=destroy; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) break ;;
  esac
done

vagrant up "${PROVIDER[@]}"
if [ "$SYNC" = 1 ]; then
  vagrant rsync
  vagrant provision --provision-with synguard
fi
vagrant ssh-config > .ssh-config
status=0
python3 ../controller/lab/e2e.py --hosts ssh --ssh-config .ssh-config "$@" || status=$?
case "$AFTER" in
  halt) vagrant halt ;;
  destroy) vagrant destroy -f ;;
esac
exit $status
