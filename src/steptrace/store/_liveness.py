"""Telling a run whose process died from one still going.

A running run's row names the process writing it (``pid``, ``host``) and when
it last said it was alive (``heartbeat_at``, refreshed by the writer every
``HEARTBEAT_INTERVAL`` seconds while the run is open). When a store is opened,
``interrupted_runs`` picks the ``running`` rows to mark ``interrupted``: on
this host, a process that no longer exists; on any host, a heartbeat older
than ``STALE_AFTER`` seconds (a machine that went away cannot be asked).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

__all__ = ["HEARTBEAT_INTERVAL", "STALE_AFTER", "interrupted_runs", "process_gone", "this_host"]

HEARTBEAT_INTERVAL = 5.0
STALE_AFTER = 60.0


def this_host() -> str:
    return socket.gethostname()


def process_gone(pid: int) -> bool:
    """True when no process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    except OSError:
        return False
    return False


def interrupted_runs(
    running: Iterable[tuple[str, int | None, str | None, float | None, float]],
    *,
    now: float,
    stale_after: float = STALE_AFTER,
) -> list[str]:
    """Ids among ``running`` rows ``(id, pid, host, heartbeat_at, started_at)``
    whose writer is gone. The writing process itself is never gone."""
    host = this_host()
    me = os.getpid()
    gone: list[str] = []
    for run_id, pid, run_host, heartbeat_at, started_at in running:
        if run_host == host and pid is not None:
            if pid != me and process_gone(pid):
                gone.append(run_id)
            continue
        last_seen = heartbeat_at if heartbeat_at is not None else started_at
        if now - last_seen > stale_after:
            gone.append(run_id)
    return gone
