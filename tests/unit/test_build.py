"""Every build of the data path compiles without a word from clang: attach
compiles at run time, and a warning would reach the operator's terminal
(and the journal) on every attach."""

import pytest
from synguard import datapath
from synguard.lab import support

BUILDS = [
    pytest.param("synguard", False, (), id="synguard cookies"),
    pytest.param("synguard", True, (), id="synguard cookies, conntrack"),
    pytest.param("kernel", False, (), id="kernel cookies"),
    pytest.param("kernel", True, tuple(datapath.COMPAT.values()), id="kernel cookies, conntrack, pre-5.18"),
]


@pytest.mark.root
@pytest.mark.parametrize("cookies,conntrack,defines", BUILDS)
def test_every_build_compiles_without_a_warning(capfd, cookies, conntrack, defines):
    capfd.readouterr()
    with support.compiled("build", cookies=cookies, conntrack=conntrack, defines=defines):
        pass
    err = capfd.readouterr().err
    assert "warning:" not in err and "error:" not in err, err
