"""``psm dashboard``: serve the Streamlit dashboard of the installed package.

The app is the ``dashboard`` package's ``app.py`` wherever the package is installed (a wheel,
an image, a checkout), so the compose stack and a plain ``pip install`` need no checkout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.common import fail

app = typer.Typer()


def app_path() -> Path:
    """The installed dashboard's ``app.py``, located and not imported (the dashboard sits above worker).

    ``dashboard`` and ``worker`` ship in the same distribution, so the app lies beside this package.
    """
    path = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    if not path.is_file():
        raise fail(f"the dashboard is not installed beside the worker package (no {path})")
    return path


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
