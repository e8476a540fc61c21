# synguard: the README's commands. All of them install what they need first
# (deploy/install.sh: apt packages, kernel headers, the venv, the package).
VENV    ?= $(CURDIR)/.venv
PYTHON  := $(VENV)/bin/python
# Extra Debian packages the tests and benchmarks use.
TEST_APT := prometheus nftables netsniff-ng

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

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
