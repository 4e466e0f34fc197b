"""The `tuneline` command line."""

from __future__ import annotations

from collections.abc import Iterator
import inspect
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal, Optional, get_args, get_origin

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
        log = getattr(exc, "log_path", None)
        typer.secho(f"error: {exc}" + (f"\n(the full log, with tracebacks: {log})" if log else ""), err=True,
                    fg=typer.colors.RED)
        raise typer.Exit(1) from None


@app.command()
def retrain(config: ConfigOption = None, overrides: Overrides = None) -> None:
    """Run the retrain flow: ingest, validate, clean, split, fine-tune, evaluate, export, register, alias."""
    with _plain_errors():
        from tuneline import api

        api.retrain(load_config(config, overrides or []))


@app.command()
def tune(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file with the tune config.")] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="key=value overrides, e.g. trials=20 algorithm=random retrain.train.method=lora")] = None,
) -> None:
    """Search hyperparameters with Optuna (a study of fine-tune trials); write the best config as a preset.

    Running the same study_name again resumes it.
    """
    with _plain_errors():
        from tuneline import api

        summary = api.tune(api.load_tune_config(config, overrides or []))
        typer.echo(f"best trial {summary.best_trial}: validation {summary.metric} {summary.best_value:.4f}; "
                   f"preset {summary.preset_path} (tuneline retrain --config {summary.preset_path})")


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
        from tuneline.promotion.gate import promote as promote_version

        policy = load_config(config, overrides or []).promotion
        result = promote_version(name, version, policy, reason, force)
        typer.echo(result.decision.to_markdown(f"{name} version {version}", result.champion_version,
                                               forced=not result.decision.promote))
        typer.echo(f"\n{name}@champion is now version {version}"
                   + (f" (was {result.champion_version})" if result.champion_version else ""))


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
        from tuneline.api import flow_run
        from tuneline.flows.export import export as export_flow

        with flow_run("export"):
            new_version = export_flow(name=name, version=version, settings=settings)
        typer.echo(f"{name} version {new_version}: re-exported from {version}; promote it with "
                   f"`tuneline promote {name} --version {new_version}`")


# The serve flags are ServeSettings' fields, named after them (these few keep their shorter, older names).
SERVE_FLAGS = {"model_uri": "--model", "reload_interval_s": "--reload-interval",
               "request_timeout_s": "--request-timeout"}


def _options_from(model, flags: dict[str, str]) -> list[inspect.Parameter]:
    """Typer options for a pydantic model's fields: the field's name as the flag, its description as the help, its
    default as the default. Typer gets the plain type; the model checks the value (bounds, choices)."""
    parameters = []
    for name, field in model.model_fields.items():
        annotation, help_text = field.annotation, field.description or ""
        if get_origin(annotation) is Literal:
            annotation, help_text = str, f"{help_text} One of: {', '.join(map(str, get_args(annotation)))}."
        elif type(None) in get_args(annotation):  # `int | None`: empty by default
            annotation = Optional[next(a for a in get_args(annotation) if a is not type(None))]
        flag = flags.get(name, "--" + name.replace("_", "-"))
        if annotation is bool:
            flag = f"{flag}/--no-{flag.removeprefix('--')}"
        option = typer.Option(flag, help=help_text)
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[annotation, option],
                                            default=inspect.Parameter.empty if field.is_required() else field.default))
    return parameters


def serve(**values) -> None:
    """Serve a registered version's ONNX model: v1 predict and the Open Inference Protocol v2 over HTTP (and gRPC
    with --grpc-port), /metrics."""
    from pydantic import ValidationError

    from tuneline.errors import ConfigError
    from tuneline.serving import ServeSettings, serve as run_server

    with _plain_errors():
        try:
            settings = ServeSettings(**values)
            settings.reference()
        except ValidationError as exc:
            problems = "; ".join(f"{SERVE_FLAGS.get(str(e['loc'][0]), '--' + str(e['loc'][0]).replace('_', '-'))}"
                                 f": {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors())
            raise ConfigError(f"tuneline serve: {problems}") from None
        except ValueError as exc:
            raise ConfigError(f"tuneline serve: {exc}") from None
        run_server(settings)


def _serve_command() -> None:
    from tuneline.serving.settings import ServeSettings

    serve.__signature__ = inspect.Signature(_options_from(ServeSettings, SERVE_FLAGS))
    app.command()(serve)


_serve_command()


def _predict_command() -> None:
    from tuneline.serving.settings import PredictSettings

    files = [
        inspect.Parameter("input_path", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[Path, typer.Argument(
            metavar="INPUT", help="A .csv, .tsv, .jsonl or .parquet file, or a folder saved by datasets' save_to_disk.")]),
        inspect.Parameter("output_path", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[Path, typer.Argument(
            metavar="OUTPUT", help="Where to write the input's columns plus the predictions; its suffix (.csv, .tsv, "
            ".jsonl, .parquet) picks the format. Written to a temporary file beside it, renamed at the end.")]),
    ]
    predict.__signature__ = inspect.Signature(files + _options_from(PredictSettings, {"model_uri": "--model"}))
    app.command()(predict)


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: Annotated[str, typer.Option(help="Why; recorded on both versions.")] = "rolled back by hand",
) -> None:
    """Move `champion` back to the version that held it before."""
    with _plain_errors():
        from tuneline.registry.store import rollback as rollback_champion

        left, restored = rollback_champion(name, reason)
        typer.echo(f"{name}: champion moved from version {left} back to version {restored}")


@app.command()
def models(name: Annotated[str, typer.Argument(help="Registered model name.")]) -> None:
    """List a model's versions with aliases, test metrics and lineage."""
    from mlflow.exceptions import MlflowException
    from rich.console import Console
    from rich.table import Table

    from tuneline.errors import RegistrationError
    from tuneline.registry.store import list_versions

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
    kind: Annotated[str, typer.Option(help=(
        "reviews: text,label,domain (classification); ratings: text,rating,domain (regression); seq2seq: "
        "text,target,topic; causal: prompt,response,intent (causal_lm); multilabel: text,labels (|-joined),product."
    ))] = "reviews",
    rows: Annotated[Optional[int], typer.Option(help="Rows to write (default: the shipped sample's).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default: the shipped sample's).")] = None,
) -> None:
    """Write a generated sample; the defaults give exactly the shipped builtin:sample-<kind> file."""
    from tuneline.data.samples import SAMPLES
    from tuneline.errors import ConfigError

    with _plain_errors():
        if kind not in SAMPLES:
            raise ConfigError(f"tuneline sample --kind {kind!r}: choose one of {', '.join(SAMPLES)}")
    write, _ = SAMPLES[kind]
    # Unset options fall through to the writer's own defaults: those of the shipped sample of that kind.
    given = {name: value for name, value in (("n_rows", rows), ("seed", seed)) if value is not None}
    typer.echo(write(output, **given))


def _run_prefect(arguments: list[str], cwd: Path) -> str:
    """Run the `prefect` CLI of this environment; its output, or a TunelineError holding the end of it."""
    import shutil
    import subprocess
    import sys

    from tuneline.errors import ConfigError

    executable = shutil.which("prefect", path=str(Path(sys.executable).parent)) or shutil.which("prefect")
    if executable is None:
        raise ConfigError("the `prefect` command is not installed in this environment")
    done = subprocess.run([executable, "--no-prompt", *arguments], cwd=cwd, capture_output=True, text=True)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise TunelineError(f"`prefect {' '.join(arguments)}` failed (exit {done.returncode}):\n{output[-3000:]}")
    return output


@app.command()
def deploy(
    prefect_file: Annotated[Optional[Path], typer.Option(
        help="Deployment definitions; default: deployments/prefect.yaml of this checkout.")] = None,
    pool: Annotated[Optional[str], typer.Option(
        help="Work pool for every deployment, instead of the one each names (tuneline-process).")] = None,
    pool_type: Annotated[Literal["process", "docker", "kubernetes"], typer.Option(
        help="Type of a work pool that does not exist yet; docker and kubernetes pools start from "
             "infra/work-pools/<type>.json.")] = "process",
) -> None:
    """Register the deployments (schedule, new-data trigger, concurrency limits, presets) with the Prefect server
    in PREFECT_API_URL, creating their work pool first if it is missing. Same as
    `prefect deploy --all --prefect-file deployments/prefect.yaml` from the repository root."""
    import os
    import tempfile

    import httpx
    import yaml

    from tuneline.errors import ConfigError
    from tuneline.settings import PROJECT_ROOT, answering_prefect_api

    with _plain_errors():
        api = answering_prefect_api(os.environ.get("PREFECT_API_URL"))
        source = (prefect_file or PROJECT_ROOT / "deployments" / "prefect.yaml").resolve()
        if not source.is_file():
            raise ConfigError(f"{source} does not exist: pass --prefect-file (tuneline deploy reads a checkout's "
                              "deployments/prefect.yaml by default)")
        spec = yaml.safe_load(source.read_text()) or {}
        deployments = spec.get("deployments") if isinstance(spec, dict) else None
        if not deployments:
            raise ConfigError(f"{source} defines no deployments")
        if pool:
            for deployment in deployments:
                deployment["work_pool"] = {**(deployment.get("work_pool") or {}), "name": pool}
        pools = sorted({(d.get("work_pool") or {}).get("name") for d in deployments} - {None})
        for name in pools:
            if httpx.get(f"{api}/work_pools/{name}", timeout=10).status_code == 404:
                create = ["work-pool", "create", name, "--type", pool_type]
                if pool_type != "process":
                    template = PROJECT_ROOT / "infra" / "work-pools" / f"{pool_type}.json"
                    if not template.is_file():
                        raise ConfigError(f"base job template {template} is missing")
                    create += ["--base-job-template", str(template)]
                _run_prefect(create, PROJECT_ROOT)
                typer.echo(f"created {pool_type} work pool {name}")
        with tempfile.TemporaryDirectory() as scratch:
            definitions = source
            if pool:
                definitions = Path(scratch) / "prefect.yaml"
                definitions.write_text(yaml.safe_dump(spec, sort_keys=False))
            # Entrypoints (flows/<file>.py:<flow>) are relative to the repository root.
            _run_prefect(["deploy", "--all", "--prefect-file", str(definitions)], PROJECT_ROOT)
        registered = httpx.post(f"{api}/deployments/filter", json={
            "deployments": {"name": {"any_": [d["name"] for d in deployments]}}}, timeout=10).json()
        for deployment in sorted(registered, key=lambda d: d["name"]):
            flow_name = httpx.get(f"{api}/flows/{deployment['flow_id']}", timeout=10).json()["name"]
            limit = (deployment.get("global_concurrency_limit") or {}).get("limit")
            details = [f"cron {s['schedule']['cron']} {s['schedule'].get('timezone') or ''}".strip()
                       for s in deployment["schedules"] if s["schedule"].get("cron")]
            details += [f"at most {limit} at a time"] if limit else []
            typer.echo(f"  {flow_name}/{deployment['name']} -> pool {deployment['work_pool_name']}"
                       + (f" ({', '.join(details)})" if details else ""))
        typer.echo(f"registered {len(registered)} deployments with {api}; a worker on pool(s) {', '.join(pools)} runs "
                   "them (`make services-up` starts one for tuneline-process)")


@app.command()
def land(
    path: Annotated[Path, typer.Argument(help="The new data: a file, or a folder saved by `datasets`.")],
    model: Annotated[str, typer.Option(help="Registered model whose retrain deployment listens for it.")] =
        "tuneline-classifier",
    force: Annotated[bool, typer.Option(help="Announce even if the content is the one last announced.")] = False,
) -> None:
    """Announce new data to the Prefect server (event tuneline.data.landed): the retrain deployment's trigger
    starts a run on it. Content already announced last for the model is not announced again, so this can run
    from cron or a file watcher."""
    with _plain_errors():
        from tuneline.tasks.ingest import DATA_LANDED, announce_landed_data  # imports Prefect

        landed = announce_landed_data(path, model, force)
    if landed.announced:
        typer.echo(f"announced {landed.path} (sha256 {landed.sha256[:12]}) for {model}: event {DATA_LANDED}")
    else:
        typer.echo(f"{landed.path} is what was last announced for {model} (sha256 {landed.sha256[:12]}): "
                   "nothing announced (--force announces it again)")


def predict(input_path: Path, output_path: Path, **values) -> None:
    """Score a file with the exported ONNX model `tuneline serve` runs, in chunks, with a progress bar."""
    import os
    import signal

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    def terminated(signum, _frame):  # SIGTERM unwinds like Ctrl-C: the temporary file is removed, OUTPUT untouched
        raise SystemExit(128 + signum)

    bar = Progress("rows", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True))
    task = bar.add_task("rows", total=None)

    def show(done: int, total: int) -> None:
        if not bar.live.is_started:  # shown once scoring starts: input refused up front leaves just the error
            bar.start()
        bar.update(task, completed=done, total=total)

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar: ours
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        with _plain_errors():
            from tuneline.serving.batch import predict_file
            from tuneline.serving.settings import PredictSettings

            try:
                settings = PredictSettings(**values)
                report = predict_file(settings.model_uri, input_path, output_path, settings.text_column,
                                      settings.chunk_rows, settings.runner, settings.address, settings.output_prefix,
                                      progress=show)
            finally:
                bar.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
    rows, chunks = (f"{n} {word}{'s' * (n != 1)}" for n, word in ((report.rows, "row"), (report.chunks, "chunk")))
    typer.echo(f"scored {rows} in {chunks} with {report.model} version {report.version} in {report.seconds:.1f} s: "
               f"{report.output}")


_predict_command()


if __name__ == "__main__":
    app()
