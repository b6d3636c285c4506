"""Process helpers shared by the processes rpcbackfill starts (core module, stdlib only)."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h: deliver a signal to this process when its parent thread dies


def set_parent_death_signal(parent_pid: int, sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to the calling process when its parent dies.

    Call it in the child (first thing, or between fork and exec).  ``parent_pid`` is the pid the
    child expects as its parent: if that parent is already gone when prctl takes effect (the
    race between start-up and prctl) the child exits at once with status 1.  Returns False
    where prctl does not exist (not Linux); callers then rely on another signal of the parent's
    death, such as EOF on a pipe.  The signal follows the parent *thread* that started the
    child, so a parent that starts children from short-lived threads must keep them alive.
    """
    ok = True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        ok = False
    if os.getppid() != parent_pid:
        os._exit(1)
    return ok
