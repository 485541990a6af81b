"""``python -I -S die_with_parent.py PARENT_PID PROGRAM [ARG...]``: exec PROGRAM so that the kernel sends it
SIGTERM when the thread that started it goes (PR_SET_PDEATHSIG), as a dashboard that embeds Mosquitto wants.

A separate program rather than ``preexec_fn``: code run between fork and exec in a multi-threaded process
can deadlock on a lock another thread held at the fork. Standard library only (run with ``-S``)."""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    parent, program = int(argv[1]), argv[2]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        err = ctypes.get_errno()
        sys.stderr.write(f"die_with_parent: prctl: {os.strerror(err)}\n")
        return 1
    if os.getppid() != parent:  # the parent went before the request took effect
        return 0
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # ignored by Python; an ignored signal survives exec
        signal.signal(sig, signal.SIG_DFL)
    os.execv(program, argv[2:])
    return 127  # not reached: execv raises on failure


if __name__ == "__main__":
    sys.exit(main(sys.argv))
