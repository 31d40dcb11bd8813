"""``psm dashboard``: serve the Streamlit dashboard of the installed package.

The app is the ``dashboard`` package's ``app.py`` wherever the package is installed (a wheel,
an image, a checkout), so the compose stack and a plain ``pip install`` need no checkout.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.common import fail

app = typer.Typer()


def app_path() -> Path:
    """The installed dashboard's ``app.py`` (located, not imported: the dashboard sits above worker)."""
    spec = importlib.util.find_spec("dashboard")
    if spec is None or not spec.submodule_search_locations:
        raise fail("the dashboard package is not installed")
    places = [Path(p) / "app.py" for p in spec.submodule_search_locations]
    for path in places:  # the first folder of that name that holds the app (a test folder may share the name)
        if path.is_file():
            return path
    raise fail(f"the dashboard package has no app.py (looked in {', '.join(str(p.parent) for p in places)})")


def streamlit_argv(port: int, address: str, extra: list[str]) -> list[str]:
    """The ``python -m streamlit run`` command line for the installed app."""
    return [sys.executable, "-m", "streamlit", "run", str(app_path()),
            "--server.port", str(port), "--server.address", address,
            "--server.headless", "true", "--browser.gatherUsageStats", "false", *extra]


@app.command("dashboard", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dashboard(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", help="Port to serve on.")] = 8501,
    address: Annotated[str, typer.Option(
        "--address", help="Address to bind (0.0.0.0 in a container; 127.0.0.1 keeps it on this machine).")] = "127.0.0.1",
) -> None:
    """Serve the dashboard (headless Streamlit); further arguments go to `streamlit run`."""
    argv = streamlit_argv(port, address, list(ctx.args))
    # Replace this process: signals (docker stop, Ctrl-C) reach Streamlit directly.
    os.execv(argv[0], argv)
