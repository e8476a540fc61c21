# synguard: the README's commands. All of them install what they need first
# (deploy/install.sh: apt packages, kernel headers, the venv, the package).
VENV    ?= $(CURDIR)/.venv
PYTHON  := $(VENV)/bin/python
# Extra Debian packages the tests and benchmarks use.
TEST_APT := prometheus nftables netsniff-ng vagrant vagrant-libvirt

.PHONY: install setup demo test fuzz soak bench clean

install:            ## the set-up alone; synguard ends up on PATH
	deploy/install.sh --venv /opt/synguard/venv --link --systemd

setup:
	deploy/install.sh --venv $(VENV) --dev --extra-apt "$(TEST_APT)"

demo: setup         ## namespace test bed, real clients, a bounded flood, counters
	$(PYTHON) -m synguard.demo

test: setup         ## the test suite (needs root: namespaces, XDP, bpffs)
	$(PYTHON) -m pytest -q -ra tests

fuzz: setup         ## 100,000 fuzzed frames against the model (a few minutes)
	SYNGUARD_FUZZ_EXAMPLES=100000 $(PYTHON) -m pytest -q tests/test_fuzz.py

soak: setup         ## floods at the generator's maximum, real clients throughout (3 minutes)
	$(PYTHON) tests/soak.py --seconds 180

bench: setup        ## per-packet cost, syncache timer, floods against the alternatives (under 10 minutes)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,bench]'
	cd bench && $(PYTHON) pktcost.py --markdown ../docs/bench/pktcost.md
	cd bench && $(PYTHON) syncache_timer.py --markdown ../docs/bench/syncache_timer.md
	cd bench && $(PYTHON) flood.py --out ../docs/bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
