"""The config map's one writer.

Whatever changes what the data path does comes here: attach and adopt,
reload, `synguard set`, the firewall watch and the drain. The config is
always derived whole, never patched: the settings over the defaults, the
interface's MTU and the namespace's TCP sysctls (kernelconf), what the
firewall needs (the plan recorded in the run state), the drain switch, and
the prefix seed of the data path that runs (so its reply budgets stay
valid). Settings that contradict each other, the cookie mode or the
running syncache map are refused first (settings.check), and nothing is
written then.
"""

from . import kernelconf, layout, netlink
from .settings import check as settings_check


class ConfigRefused(ValueError):
    """The settings cannot apply to this data path: one line, why."""


def check(maps, state, settings):
    """ConfigRefused if settings ({sg_config field: raw value}, the defaults
    fill the rest) cannot apply to the data path of state (a RunState: its
    interface, cookie mode, firewall plan and phase) and its maps."""
    fields = {**layout.SETTING_DEFAULTS, **settings}
    try:
        settings_check(fields, state.cookies, maps.syncache.max_entries, state.ifname)
    except ValueError as e:
        raise ConfigRefused(str(e)) from None
    return fields


def apply(maps, state, settings):
    """Write the config for settings to the data path of state, checked
    first (check). Returns the layout.Config written."""
    fields = check(maps, state, settings)
    mtu = netlink.link_attrs(state.ifindex)["mtu"]
    cfg = kernelconf.derive(mtu, fields, prefix_seed=maps.config.lookup(0).prefix_seed)
    if state.fw_insert:
        cfg.flags |= layout.CF_CONNTRACK
        if state.fw_noscale:
            cfg.flags &= ~layout.CF_WSCALE
    if state.phase == "draining":
        cfg.flags |= layout.CF_DRAIN
    maps.config.update(0, cfg)
    return cfg
