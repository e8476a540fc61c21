"""The test bed, not the daemon: network namespaces with real clients and
listeners (testbed, netns), the demo, the end-to-end suite and the Python
reference of the cookie. Used by `make demo`, the tests, the benchmarks and
the VM scripts; nothing in the controller imports it."""


def add_cookies_option(ap, host="this kernel"):
    """--cookies, as the demo and the e2e suite take it."""
    ap.add_argument(
        "--cookies",
        choices=("auto", "synguard", "kernel"),
        default="auto",
        help="whose cookies the server answers with (default auto: what %s gets)" % host,
    )
