"""The test bed, not the daemon: network namespaces with real clients and
listeners (testbed, netns), the demo, the end-to-end suite and the Python
reference of the cookie. Used by `make demo`, the tests, the benchmarks and
the VM scripts; nothing in the controller imports it."""
