"""Services started by the launcher stop when it dies.

The launcher runs each service in a process group of its own (so that a Ctrl-C reaches the
launcher alone, which then stops them in order). A launcher killed outright (SIGKILL, its
terminal's session ending) would leave them running as orphans holding their ports and the
LMDB. So the launcher names itself in ACTLOG_PARENT_PID, and each service asks to be sent
SIGTERM, the signal of its graceful stop, when that process dies: on Linux by the kernel
(PR_SET_PDEATHSIG, when ACTLOG_PARENT_DEATHSIG says the launcher started it from its main
thread: the signal follows the thread that forked), and everywhere by a watcher thread that
checks the parent once a second.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

logger = logging.getLogger(__name__)

PARENT_PID_ENV = "ACTLOG_PARENT_PID"
DEATHSIG_ENV = "ACTLOG_PARENT_DEATHSIG"
_PR_SET_PDEATHSIG = 1
POLL_S = 1.0


def launcher_env() -> dict[str, str]:
    """What the launcher adds to a service's environment."""
    main_thread = threading.current_thread() is threading.main_thread()
    return {PARENT_PID_ENV: str(os.getpid()), DEATHSIG_ENV: "1" if main_thread else ""}


def stop_with_launcher() -> None:
    """When started by the launcher, SIGTERM this process once the launcher is gone."""
    value = os.environ.get(PARENT_PID_ENV, "")
    if not value.isdigit():
        return
    parent = int(value)
    if sys.platform.startswith("linux") and os.environ.get(DEATHSIG_ENV) == "1":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            logger.warning("PR_SET_PDEATHSIG failed (errno %d)", ctypes.get_errno())
    threading.Thread(target=_watch, args=(parent,), name="launcher-watch", daemon=True).start()


def _watch(parent: int) -> None:
    # Also covers the launcher dying before the prctl above: our parent is then another
    # process already.
    while os.getppid() == parent:
        time.sleep(POLL_S)
    logger.warning("the launcher (pid %d) is gone: stopping", parent)
    os.kill(os.getpid(), signal.SIGTERM)
