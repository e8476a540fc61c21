"""synguard: SYN cookies at XDP, handed to real sockets."""

__version__ = "0.1.0"
