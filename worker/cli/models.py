"""``psm register-model``: register a checkpoint as a model version."""

from __future__ import annotations

from pathlib import Path

import typer

from worker.cli.common import connect, console

app = typer.Typer()


@app.command("register-model")
def register_model_cmd(
    checkpoint: Path = typer.Argument(..., help="a checkpoint written by psm_model.save_checkpoint"),
    name: str = typer.Option(None, help="a readable name for the version"),
) -> None:
    """Register a checkpoint as a model version (embeddings are keyed by it); prints the version."""
    from psm_db.registry import register_model

    try:
        with connect() as conn:
            mv = register_model(conn, checkpoint, name=name)
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e
    console.print(f"registered {mv.name}: preset {mv.preset}, d={mv.embed_dim}, features {mv.feature_dim}")
    typer.echo(mv.version)
