"""Where tuneline keeps its state, and which services it talks to.

Real services are chosen only by the standard variables (`MLFLOW_TRACKING_URI`,
`PREFECT_API_URL`); without them everything lives under one state folder,
`./.tuneline/` or `$TUNELINE_HOME`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

# The folder that holds expectations/ and the example configs when tuneline runs
# from a checkout or an editable install.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def state_dir() -> Path:
    """The state folder (created if missing): `$TUNELINE_HOME`, else `./.tuneline`."""
    home = Path(os.environ.get("TUNELINE_HOME", ".tuneline")).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def tracking_uri() -> str:
    """`$MLFLOW_TRACKING_URI`, else a SQLite file in the state folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state_dir() / 'mlflow.db'}"


def uses_local_tracking() -> bool:
    """True when MLflow runs embedded (no tracking server was named)."""
    return not os.environ.get("MLFLOW_TRACKING_URI", "").startswith(("http://", "https://", "databricks"))


def artifact_location() -> str | None:
    """Artifact root for new experiments: a local folder when embedded, the server's choice otherwise."""
    if not uses_local_tracking():
        return None
    return (state_dir() / "artifacts").as_uri()


def configure_environment() -> None:
    """Point Prefect and MLflow at the state folder unless the user named real services.

    Must run before `prefect` is imported: Prefect reads its settings once.
    """
    home = state_dir()
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri())
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
        # The embedded server's first start (migrations, cold imports) can pass Prefect's 20 s on a 2-core box.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Telemetry inserts race the ephemeral server's SQLite and fill the logs with lock errors.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Our library logs through `logging`; this makes those lines task logs in the Prefect UI.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tuneline")
    if logging.getLogger("tuneline").level == logging.NOTSET:
        logging.getLogger("tuneline").setLevel(logging.INFO)  # progress lines, not just warnings
    # Nothing may reach a model or dataset hub unless the user opts in.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Per-file download bars of MLflow's own model validation drown the task logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def answering_prefect_api(api: str | None) -> str:
    """`api` (a PREFECT_API_URL) when a Prefect server answers there, else a ConfigError saying how to get one."""
    import httpx

    from tuneline.errors import ConfigError

    api = (api or "").rstrip("/")
    if not api:
        raise ConfigError("this needs a Prefect server: set PREFECT_API_URL "
                          "(`make services-up` starts one on 127.0.0.1 and prints the exports)")
    try:
        httpx.get(f"{api}/health", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        raise ConfigError(f"no Prefect server answers at PREFECT_API_URL={api} ({exc}); start one "
                          "(`make services-up`) or fix the variable") from None
    return api
