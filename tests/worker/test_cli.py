"""The ``psm`` command line in worker/cli/: one table of embed-region options, two entry points."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.main import get_command
from worker_helpers import CELERY, PSM, ROOT

from worker.cli import app, embed_region, package_version
from worker.cli.embed import EMBED_OPTIONS

ARGV = ["--region", "0,51,0.1,51.1", "-m", "deadbeef", "-z", "1,3", "--zoom", "5", "--imagery", "geotiff",
        "--imagery-path", "/data/x.tif", "--seed", "7", "--world-imagery", "highres", "--gsd", "2.5",
        "--size-px", "64", "--source-name", "s", "--bands", "4,3,2", "--min-valid", "0.8", "-c", "month=5,hour=20", "--condition", "caption=metadata",
        "--month", "6", "--hour", "12", "--audio-source", "aporee", "--caption-source", "metadata",
        "--chunk-tiles", "9", "--wait", "--no-progress", "--timeout", "30"]


def _typer_embed():
    return get_command(app).commands["embed-region"]  # type: ignore[attr-defined]


def _params(cmd, argv):
    """The values a command would call its handler with (parsing only; nothing runs)."""
    ctx = cmd.make_context("embed-region", list(argv))
    return {k: tuple(v) if isinstance(v, list) else v for k, v in ctx.params.items()}


def _options(cmd):
    return {p.name: (tuple(p.opts), tuple(p.secondary_opts), bool(p.required), bool(p.multiple), p.help)
            for p in cmd.params if p.name != "help"}


def test_both_entry_points_declare_the_same_options():
    table = {s.name for s in EMBED_OPTIONS}
    assert len(table) == len(EMBED_OPTIONS) == 21
    assert _options(embed_region) == _options(_typer_embed())
    assert set(_options(embed_region)) == table


def test_both_entry_points_parse_the_same_values():
    full = _params(embed_region, ARGV)
    assert full == _params(_typer_embed(), ARGV)
    assert full["zoom"] == ("1,3", "5") and full["condition"] == ("month=5,hour=20", "caption=metadata")
    assert (full["wait"], full["progress"], full["gsd"], full["seed"]) == (True, False, 2.5, 7)
    assert (full["bands"], full["min_valid"]) == ("4,3,2", 0.8)
    minimal = ["-r", "0,51,0.1,51.1", "-m", "deadbeef"]
    defaults = _params(embed_region, minimal)
    assert defaults == _params(_typer_embed(), minimal)
    assert (defaults["zoom"], defaults["condition"], defaults["imagery"], defaults["size_px"],
            defaults["wait"], defaults["progress"], defaults["month"]) == ((), (), "world", 256, False, True, None)
    assert (defaults["bands"], defaults["min_valid"]) == (None, 0.5)


@pytest.mark.parametrize("argv", [["-m", "deadbeef"], ["-r", "x", "-m", "y", "--imagery", "s3"],
                                  ["-r", "x", "-m", "y", "--seed", "one"],
                                  ["-r", "x", "-m", "y", "--min-valid", "half"]])
def test_both_entry_points_refuse_the_same_bad_input(argv):
    import click

    with pytest.raises(click.UsageError):
        embed_region.make_context("embed_region", list(argv))
    with pytest.raises(Exception) as typer_err:  # typer raises its own (vendored) click's UsageError
        _typer_embed().make_context("embed-region", list(argv))
    assert type(typer_err.value).__name__ in ("MissingParameter", "BadParameter", "UsageError")


def test_celery_subcommand_help_lists_the_table():
    """The ``celery.commands`` entry point still mounts the command (nothing connects for --help)."""
    out = subprocess.run([CELERY, "-A", "worker", "embed_region", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for spec in EMBED_OPTIONS:
        assert spec.flags[0].split("/")[0] in out.stdout, spec.flags[0]
    assert "prints the job" in out.stdout


def test_every_group_is_mounted():
    cli = get_command(app)
    assert list(cli.commands) == ["embed-region", "register-model", "job", "submit-train", "services", "db",  # type: ignore[attr-defined]
                                  "query", "regions", "train", "eval", "world", "map", "dashboard"]
    assert set(cli.commands["query"].commands) == {"embed", "index", "list", "rank"}  # type: ignore[attr-defined]
    assert set(cli.commands["world"].commands) == {"build"}  # type: ignore[attr-defined]


def test_version_prints_the_installed_package_version():
    from importlib.metadata import version

    out = subprocess.run([PSM, "--version"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"psm {version('psm-maps')}"
    assert package_version() == version("psm-maps")
    # eager: the version wins over a command and its required options
    out = subprocess.run([PSM, "--version", "map"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("psm "), out.stderr


def test_dashboard_command_runs_the_packages_app_headless():
    import sys

    from worker.cli.dashboard import app_path, streamlit_argv

    # under pytest the name "worker" can stand for tests/worker, so the checkout's root is the reference
    assert app_path() == Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    assert app_path().is_file()
    argv = streamlit_argv(8600, "0.0.0.0", ["--theme.base", "dark"])
    assert argv[:5] == [sys.executable, "-m", "streamlit", "run", str(app_path())]
    opts = dict(zip(argv[5::2], argv[6::2], strict=True))
    assert opts == {"--server.port": "8600", "--server.address": "0.0.0.0", "--server.headless": "true",
                    "--browser.gatherUsageStats": "false", "--theme.base": "dark"}
    ctx = get_command(app).commands["dashboard"].make_context("dashboard", ["--port", "9", "--x.y", "z"])  # type: ignore[attr-defined]
    assert (ctx.params["port"], ctx.params["address"], ctx.args) == (9, "127.0.0.1", ["--x.y", "z"])
