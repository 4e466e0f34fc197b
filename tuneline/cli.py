"""The `tuneline` command line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from tuneline.config import load_config
from tuneline.errors import TunelineError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fine-tune, validate, register and ship transformer models.")

ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file with the flow's config.")]
Overrides = Annotated[Optional[list[str]], typer.Argument(help="section.key=value overrides, e.g. train.epochs=1")]


@contextmanager
def _plain_errors() -> Iterator[None]:
    """Our own errors end the command with their message and exit code 1, not a traceback."""
    try:
        yield
    except TunelineError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None


@app.command()
def retrain(config: ConfigOption = None, overrides: Overrides = None) -> None:
    """Run the retrain flow: ingest, validate, clean, split, fine-tune, evaluate, export, register, alias."""
    with _plain_errors():
        resolved = load_config(config, overrides or [])
        from flows.retrain import retrain as retrain_flow  # imports Prefect: only when a flow runs

        retrain_flow(config=resolved)


@app.command("config")
def show_config(config: ConfigOption = None, overrides: Overrides = None) -> None:
    """Print the resolved config (defaults + file + overrides) as YAML."""
    with _plain_errors():
        typer.echo(load_config(config, overrides or []).to_yaml(), nl=False)


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Option("--version", "-v", help="Version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why; recorded on the version.")] = "promoted by hand",
    force: Annotated[bool, typer.Option(help="Promote even if the gate holds; the gate's reasons are recorded.")] = False,
    config: ConfigOption = None,
    overrides: Overrides = None,
) -> None:
    """Move `champion` to a version, through the quality gate (promotion.* in the config)."""
    with _plain_errors():
        from tuneline.gating import promote as promote_version

        policy = load_config(config, overrides or []).promotion
        result = promote_version(name, version, policy, reason, force)
        typer.echo(result.decision.to_markdown(f"{name} version {version}", result.champion_version))


@app.command("export")
def export_version(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Option("--version", "-v", help="Version number or alias to re-export.")] = "champion",
    config: ConfigOption = None,
    overrides: Overrides = None,
) -> None:
    """Re-export a registered version with the export.* settings, as a new version (no alias moves)."""
    with _plain_errors():
        settings = load_config(config, overrides or []).export
        from flows.export import export as export_flow

        new_version = export_flow(name=name, version=version, settings=settings)
        typer.echo(f"{name} version {new_version}: re-exported from {version}; promote it with "
                   f"`tuneline promote {name} --version {new_version}`")


@app.command()
def serve(
    model: Annotated[str, typer.Option(help="models:/NAME@alias (followed as it moves) or models:/NAME/VERSION.")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    max_batch_size: Annotated[int, typer.Option(help="Texts run together at most.")] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="How long a batch waits for more requests.")] = 5.0,
    max_inputs: Annotated[int, typer.Option(help="Texts one request may send.")] = 256,
    max_text_chars: Annotated[int, typer.Option(help="Longest text accepted.")] = 20_000,
    over_length: Annotated[str, typer.Option(help="reject or truncate a longer text.")] = "reject",
    reload_interval: Annotated[float, typer.Option(help="Seconds between alias checks; 0: never.")] = 30.0,
    threads: Annotated[Optional[int], typer.Option(help="onnxruntime threads; default: all cores.")] = None,
) -> None:
    """Serve a registered version's ONNX model over HTTP (v1 predict, Open Inference Protocol v2, /metrics)."""
    from pydantic import ValidationError

    from tuneline.errors import ConfigError
    from tuneline.serving import ServeSettings, serve as run_server

    with _plain_errors():
        try:
            settings = ServeSettings(model_uri=model, host=host, port=port, max_batch_size=max_batch_size,
                                     max_wait_ms=max_wait_ms, max_inputs=max_inputs, max_text_chars=max_text_chars,
                                     over_length=over_length, reload_interval_s=reload_interval, threads=threads)
            settings.reference()
        except (ValidationError, ValueError) as exc:
            raise ConfigError(f"tuneline serve: {exc}") from None
        run_server(settings)


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: Annotated[str, typer.Option(help="Why; recorded on both versions.")] = "rolled back by hand",
) -> None:
    """Move `champion` back to the version that held it before."""
    with _plain_errors():
        from tuneline.registry import rollback as rollback_champion

        left, restored = rollback_champion(name, reason)
        typer.echo(f"{name}: champion moved from version {left} back to version {restored}")


@app.command()
def models(name: Annotated[str, typer.Argument(help="Registered model name.")]) -> None:
    """List a model's versions with aliases, test metrics and lineage."""
    from mlflow.exceptions import MlflowException
    from rich.console import Console
    from rich.table import Table

    from tuneline.errors import RegistrationError
    from tuneline.registry import list_versions

    with _plain_errors():
        try:
            rows = list_versions(name)
        except MlflowException:  # the registered model itself does not exist
            rows = []
        if not rows:
            raise RegistrationError(f"no versions of {name!r} are registered")
    table = Table(title=f"{name}: {len(rows)} versions")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*row.values())
    Console(width=200).print(table)


@app.command()
def sample(
    output: Annotated[Path, typer.Argument(help="Where to write the CSV.")],
    kind: Annotated[Literal["reviews", "seq2seq"], typer.Option(
        help="reviews: text,label,domain (classification); seq2seq: text,target,topic (generation).")] = "reviews",
    rows: Annotated[Optional[int], typer.Option(help="Rows to write (default: 3000 for reviews, 2000 for seq2seq).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default: 13 for reviews, 17 for seq2seq).")] = None,
) -> None:
    """Write a generated sample; the defaults give exactly the shipped builtin:sample-reviews / builtin:sample-seq2seq."""
    from tuneline.sample_data import write_sample, write_seq2seq_sample

    write = write_sample if kind == "reviews" else write_seq2seq_sample
    # Unset options fall through to the writer's own defaults: those of the shipped sample of that kind.
    given = {name: value for name, value in (("n_rows", rows), ("seed", seed)) if value is not None}
    typer.echo(write(output, **given))


if __name__ == "__main__":
    app()
