"""The netlink calls with the pyroute2 of the oldest systems served:
Debian 11's 0.5.14 has no extended-ack argument to IPRoute."""

import pyroute2
from synguard import netlink


class IPRoute05(pyroute2.IPRoute):
    """IPRoute as pyroute2 0.5.14 takes it: no ext_ack."""

    def __init__(self, *args, **kw):
        if "ext_ack" in kw:
            raise TypeError("__init__() got an unexpected keyword argument 'ext_ack'")
        super().__init__(*args, **kw)


def test_pyroute2_without_extended_acks(monkeypatch):
    monkeypatch.setattr(pyroute2, "IPRoute", IPRoute05)
    assert netlink.xdp_query(netlink.ifindex("lo")) == (0, None)


def test_an_error_inside_is_not_taken_for_an_old_pyroute2(monkeypatch):
    made = []

    class Counting(pyroute2.IPRoute):
        def __init__(self, *args, **kw):
            made.append(kw)
            super().__init__(*args, **kw)

    monkeypatch.setattr(pyroute2, "IPRoute", Counting)
    try:
        with netlink._rtnl("test"):
            raise TypeError("the caller's")
    except TypeError as e:
        assert str(e) == "the caller's"
    assert made == [{"ext_ack": True}]
