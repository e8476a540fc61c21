"""`synguard top`'s refreshing screen, as top(1) has it: the terminal's
alternate screen with the cursor hidden, keys read without echo (q ends),
and on the way out, whether by q, Ctrl-C, SIGTERM or SIGHUP, the terminal
as it was: its termios modes, the cursor, the screen before."""

import os
import select
import signal
import sys
import termios
import time
import tty

ENTER = "\x1b[?1049h\x1b[?25l"  # alternate screen, cursor hidden
LEAVE = "\x1b[?25h\x1b[?1049l"  # cursor shown, the screen from before
HOME_CLEAR = "\x1b[H\x1b[J"
QUIT_KEYS = b"qQ"


class Ended(Exception):
    """SIGTERM, SIGHUP or SIGINT while the screen is up."""


def _ended(signum, frame):
    raise Ended(signum)


class Screen:
    def __init__(self, out=None, keys=None):
        self.out = out or sys.stdout
        # Keys from stdin when it is the terminal; `top < /dev/null` still
        # ends with Ctrl-C.
        keys = sys.stdin if keys is None else keys
        try:
            self.keys = keys.fileno() if os.isatty(keys.fileno()) else None
        except (AttributeError, ValueError, OSError):
            self.keys = None
        self.saved = None
        self.handlers = {}

    def __enter__(self):
        # SIGINT too, as top(1) does: started with it ignored (a background
        # job of a shell without job control), Python would leave Ctrl-C
        # ignored and the screen could only be ended by q.
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            self.handlers[sig] = signal.signal(sig, _ended)
        if self.keys is not None:
            self.saved = termios.tcgetattr(self.keys)
            tty.setcbreak(self.keys, termios.TCSANOW)  # keys one at a time, no echo; Ctrl-C still SIGINT
        self.out.write(ENTER)
        self.out.flush()
        return self

    def __exit__(self, exc_type, exc, tb):
        # Nothing may interrupt the restoring.
        for sig in self.handlers:
            signal.signal(sig, signal.SIG_IGN)
        try:
            self.out.write(LEAVE)
            self.out.flush()
        except OSError:
            pass  # the terminal is gone (SIGHUP)
        if self.saved is not None:
            try:
                termios.tcsetattr(self.keys, termios.TCSAFLUSH, self.saved)
            except termios.error:
                pass
        for sig, handler in self.handlers.items():
            signal.signal(sig, handler)
        # Ended, like Ctrl-C, is how the user stops top: not an error.
        return exc_type in (Ended, KeyboardInterrupt)

    def draw(self, lines):
        """One frame, in one write: stdout on a terminal is line-buffered,
        and a Ctrl-C between its lines would leave half a frame."""
        frame = HOME_CLEAR + "\n".join(lines) + "\n"
        buffer = getattr(self.out, "buffer", None)
        if buffer is None:
            self.out.write(frame)
            self.out.flush()
            return
        self.out.flush()
        buffer.write(frame.encode(self.out.encoding or "utf-8", "replace"))
        buffer.flush()

    def wait(self, seconds):
        """Sleep for seconds; True if q was pressed meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.keys is None:
                time.sleep(left)
                continue
            ready, _, _ = select.select([self.keys], [], [], left)
            if ready:
                data = os.read(self.keys, 64)
                if not data or any(k in QUIT_KEYS for k in data):
                    return True
