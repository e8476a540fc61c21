# synguard: the README's commands. All of them install what they need first
# (deploy/install.sh: apt packages, kernel headers, the venv, the package).
VENV    ?= $(CURDIR)/.venv
PYTHON  := $(VENV)/bin/python
# Extra Debian packages the tests and benchmarks use.
TEST_APT := prometheus nftables iptables netsniff-ng vagrant vagrant-libvirt lintian nginx-light apache2-utils
# What make vm-test needs on this machine to build and boot a Debian 13 guest.
VM_APT   := qemu-system-x86 qemu-utils debootstrap e2fsprogs
# What make vagrant-box and vagrant-e2e need: Vagrant with libvirt (no
# recommends: libvirt's NAT network "default" stays out).
VAGRANT_APT := vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu \
               dnsmasq-base ebtables iptables qemu-system-x86 qemu-utils debootstrap e2fsprogs rsync
# bench/clients.py's options in make bench-clients (--quick: one short round, about 1.5 minutes).
CLIENTS_ARGS ?= --rounds 3
# The guests' Debian for vagrant-box and vagrant-e2e: trixie (13) or bookworm (12).
SUITE ?= trixie
# libvirt's domain type for vagrant-e2e: qemu (software emulation, works
# anywhere) or kvm, where KVM boots a stock kernel.
LIBVIRT_DRIVER ?= qemu
# After make vagrant-e2e: --destroy (the default), --halt, or empty to keep the VMs.
VAGRANT_E2E_AFTER ?= --destroy
# Options for controller/lab/e2e.py, e.g. --rate 5000 (under qemu: --rate 3000 --seconds 5).
VAGRANT_E2E_ARGS ?=
# The kernel selftest xdp_synproxy's object file, built outside the repository
# (docs/BENCHMARKS.md): make bench SYNPROXY_REF=PATH adds it to pktcost's table.
SYNPROXY_REF ?=

.PHONY: install setup deb image demo test lint fuzz soak bench bench-clients vm-image vm-image-deb12 vm-image-deb11 vm-test vm-test-deb12 vm-test-deb11 vm-lan \
        vagrant-box vagrant-e2e clean

install:            ## the set-up alone; synguard ends up on PATH
	deploy/install.sh --venv /opt/synguard/venv --link --systemd

setup:
	deploy/install.sh --venv $(VENV) --dev --extra-apt "$(TEST_APT)"

deb: setup          ## dist/synguard_VERSION-1_all.deb for Debian's python3 (dpkg-deb), checked by lintian
	dpkg -s lintian >/dev/null 2>&1 || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends lintian; }
	rm -f dist/synguard_*.deb
	PYTHON=$(PYTHON) packaging/build-deb.sh
	lintian --fail-on error dist/synguard_*_all.deb

image:              ## the container image (deploy/kubernetes/Dockerfile) as synguard:VERSION, tried with --version and --help (needs a Docker daemon; not in make test)
	deploy/kubernetes/build-image.sh

demo: setup         ## namespace test bed, real clients, a bounded flood, counters
	$(PYTHON) -m synguard.lab.demo

test: setup         ## the test suite (needs root: namespaces, XDP, bpffs)
	$(PYTHON) -m pytest -q -ra tests

lint: setup         ## ruff (rules in pyproject.toml) and its formatting; clang-format on bpf/ and bench/ (kernel style)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/clang-format --dry-run -Werror --style=file:bpf/.clang-format bpf/*.c bpf/*.h bench/*.c bench/*.h

fuzz: setup         ## 100,000 fuzzed frames against the model (a few minutes)
	SYNGUARD_FUZZ_EXAMPLES=100000 $(PYTHON) -m pytest -q tests/unit/test_fuzz.py

soak: setup         ## floods at the generator's maximum, real clients throughout (3 minutes)
	$(PYTHON) tests/netns/soak.py --seconds 180

bench: setup        ## per-packet cost, syncache timer, controller footprint, floods against the alternatives (under 10 minutes)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,bench]'
	cd bench && $(PYTHON) pktcost.py --markdown ../docs/bench/pktcost.md $(if $(SYNPROXY_REF),--reference $(SYNPROXY_REF))
	cd bench && $(PYTHON) syncache_timer.py --markdown ../docs/bench/syncache_timer.md
	cd bench && $(PYTHON) footprint.py --markdown ../docs/bench/footprint.md
	cd bench && $(PYTHON) flood.py --rounds 3 --seconds 3 --count 1000000 --scaling-count 1000000 --out ../docs/bench

bench-clients: setup  ## real clients (ab against nginx) under SYN floods: kernel syncookies and synguard side by side (about 6 minutes)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,bench]'
	cd bench && $(PYTHON) clients.py $(CLIENTS_ARGS) --markdown ../docs/bench/clients.md --json ../docs/bench/clients.json

vm-image:           ## a Debian 13 (Linux 6.12) image with synguard in it, for QEMU (about 3 minutes)
	dpkg -s $(VM_APT) >/dev/null 2>&1 || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(VM_APT); }
	vagrant/qemu/build-image.sh --reuse-rootfs

vm-image-deb12:     ## the same for Debian 12 (Linux 6.1, bcc 0.26: the kernel's cookies), in /var/tmp/synguard-vm-deb12
	dpkg -s $(VM_APT) >/dev/null 2>&1 || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(VM_APT); }
	vagrant/qemu/build-image.sh --suite bookworm --reuse-rootfs

vm-image-deb11:     ## the same for Debian 11 (Linux 5.10, bcc 0.18, libbpf 0.3, Python 3.9: Ubuntu 22.04's stand-in), in /var/tmp/synguard-vm-deb11
	dpkg -s $(VM_APT) >/dev/null 2>&1 || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(VM_APT); }
	vagrant/qemu/build-image.sh --suite bullseye --reuse-rootfs

vm-test: vm-image   ## one guest, software emulation: attach, demo, e2e on namespaces, test_xdp (14-17 minutes; not in CI)
	vagrant/qemu/boot.sh

vm-test-deb12: vm-image-deb12  ## a Debian 12 guest: attach (auto picks the kernel's cookies), demo, e2e (about 5 minutes; not in CI)
	vagrant/qemu/boot.sh --suite bookworm --steps attach,demo,e2e

vm-test-deb11: vm-image-deb11  ## a Debian 11 guest (5.10, bcc 0.18, Python 3.9): attach, unit, demo, e2e in the kernel's cookies (about 10 minutes; not in CI)
	vagrant/qemu/boot.sh --suite bullseye --steps attach,unit,demo,e2e

vm-lan: vm-image    ## three guests on a LAN, the e2e suite across them over SSH (about 7 minutes; not in CI)
	vagrant/qemu/lan.sh

vagrant-box:        ## the Vagrant box synguard/$(SUITE) (libvirt) from vm-image's image, built if missing; idempotent
	dpkg -s $(VAGRANT_APT) >/dev/null 2>&1 || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(VAGRANT_APT); }
	vagrant/box.sh --suite $(SUITE) --build-image

vagrant-e2e: vagrant-box  ## server, client, attacker by vagrant up (libvirt, no network egress), the e2e suite across them (about 15 minutes; not in CI)
	SYNGUARD_BOX=synguard/$(SUITE) SYNGUARD_LIBVIRT_DRIVER=$(LIBVIRT_DRIVER) \
	  vagrant/e2e.sh --provider libvirt $(VAGRANT_E2E_AFTER) $(if $(VAGRANT_E2E_ARGS),-- $(VAGRANT_E2E_ARGS))

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
