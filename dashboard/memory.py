"""Give the memory of closed sessions back: their uploads, then the freed heap pages.

A large upload (a 10-minute clip is about 200 MB, and decoding and encoding it take several times
that) stayed in the dashboard's memory after its browser tab closed, for two reasons:

- Streamlit keeps a closed session for ``server.disconnectedSessionTTL`` (120 s) so that it can
  reconnect, and when that time is up its session store only forgets the session: nothing shuts
  it down, so its uploaded files stay in the upload manager for as long as the server runs.
- glibc keeps freed heap pages for reuse, so even memory Python has freed leaves the process at
  its high-water mark.

A daemon thread (one per server) shuts down the sessions whose reconnect time is over, which drops
their uploads and media files, and then asks glibc to return free pages (``malloc_trim``), every
``interval`` seconds. The session store is reached through Streamlit internals; where they are
not as expected (another Streamlit version), that step does nothing and says so in the log.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import logging
import threading
import time
from typing import Any

import streamlit as st

log = logging.getLogger(__name__)

@functools.cache
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Collect garbage and hand free heap pages back to the system; False where that is not possible."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def shut_down_expired_sessions() -> int:
    """Shut down the closed sessions whose reconnect time is over (their uploads go); return how many."""
    from streamlit import runtime

    if not runtime.exists():
        return 0
    manager = getattr(runtime.get_instance(), "_session_mgr", None)
    cache = getattr(getattr(manager, "_session_storage", None), "_cache", None)
    if not hasattr(cache, "expire"):
        _warn_unknown_session_store()
        return 0
    with getattr(manager, "_storage_lock", None) or contextlib.nullcontext():
        expired = cache.expire()
    for _, info in expired:
        info.session.shutdown()
    return len(expired)


@functools.cache
def _warn_unknown_session_store() -> None:
    log.warning("this Streamlit keeps closed sessions differently; their uploads are left to it")


def housekeeping() -> None:
    """One round: shut down expired sessions, then release the freed memory."""
    closed = shut_down_expired_sessions()
    release_freed_memory()
    if closed:
        log.info("shut down %d closed session(s) and released their memory", closed)


@st.cache_resource(show_spinner=False)
def start_housekeeping(interval: float | None = None) -> threading.Thread:
    """Start (once per server) the thread that runs :func:`housekeeping` every ``interval`` seconds.

    The default interval is the setting PSM_DASHBOARD_HOUSEKEEPING_S (30 s).
    """
    from psm_db.settings import get_settings

    interval = get_settings().dashboard_housekeeping_s if interval is None else interval

    def loop() -> None:
        while True:
            time.sleep(interval)
            try:
                housekeeping()
            except Exception:  # housekeeping must never take the server down
                log.exception("dashboard housekeeping failed")

    thread = threading.Thread(target=loop, name="psm-housekeeping", daemon=True)
    thread.start()
    return thread
