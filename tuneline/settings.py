"""Where tuneline keeps its state, and which services it talks to.

Real services are chosen only by the standard variables (`MLFLOW_TRACKING_URI`,
`PREFECT_API_URL`); without them everything lives under one state folder,
`./.tuneline/` or `$TUNELINE_HOME`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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
        # The embedded server's first start (migrations, cold imports) can pass Prefect's 20 s on a 2-core box, and
        # 120 s on a loaded one (seen: healthy runs failed). The causes a long wait would hide (a read-only or full
        # state folder) are refused by tuneline.runs.preflight in a second, before the server starts.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
                              os.environ.get("TUNELINE_PREFECT_STARTUP_TIMEOUT_S", "600"))
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
    bound_service_calls()


# MLflow's client defaults (7 retries, backoff factor 2, 120 s timeout) spend about 4 minutes on one call to a
# server that refuses connections (measured: 246 s), and a task makes many calls under Prefect's own retries:
# a dead server looked like a hang. Three quick retries (about 6 s) ride out a blip; the task's retries
# (tasks.common) ride out a restart. A read timeout of 60 s still lets a proxied upload of a large model finish.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


def bound_service_calls() -> None:
    """Set MLflow's HTTP retry and timeout defaults (a value the user set wins); read at each request.

    A tracking URI with credentials in it also stops MLflow printing "View run at <URI>" links, which would
    carry them into the worker's output.
    """
    for name, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if _URL_CREDENTIALS.search(os.environ.get("MLFLOW_TRACKING_URI", "")):
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


# The secrets tuneline's stages use, each read from its environment variable or, when that is unset, from the
# Prefect Secret block of the name given here (tasks.tracking.load_secrets, at the start of every flow).
# Nothing else may hold them: configs refuse credential keys (`find_secrets`), and what tuneline logs or
# records goes through `redact`.
SECRET_VARIABLES: dict[str, str] = {
    "MLFLOW_TRACKING_PASSWORD": "tuneline-mlflow-tracking-password",
    "MLFLOW_TRACKING_TOKEN": "tuneline-mlflow-tracking-token",
    "AWS_ACCESS_KEY_ID": "tuneline-aws-access-key-id",
    "AWS_SECRET_ACCESS_KEY": "tuneline-aws-secret-access-key",
    "TUNELINE_SERVE_TOKEN": "tuneline-serve-token",  # ServeSettings.token_env's default
    "HF_TOKEN": "tuneline-hf-token",  # private Hub models, for users who have the Hub
}


def fill_secrets(lookup: Callable[[str], str | None], variables: Mapping[str, str] = SECRET_VARIABLES) -> list[str]:
    """Set each unset secret variable to `lookup(block name)` when that finds one; return the variables set.

    Names only come back, never values, so the caller can log what it did. A variable already set wins.
    """
    filled = []
    for variable, block in variables.items():
        if os.environ.get(variable):
            continue
        value = lookup(block)
        if value:
            os.environ[variable] = value
            filled.append(variable)
    return filled


# `scheme://user:password@host` or `scheme://token@host`: everything between `//` and `@` before the path.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")
_SHORTEST_REDACTED = 6  # shorter values would blank out ordinary words; no real credential is that short


def redact(text: str) -> str:
    """`text` with URL credentials and the value of every secret variable set now replaced by `***`.

    For what tuneline writes where others read it: log lines, MLflow tags, error messages, the run summary.
    """
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)
    for variable in SECRET_VARIABLES:
        value = os.environ.get(variable, "")
        if len(value) >= _SHORTEST_REDACTED:
            text = text.replace(value, "***")
    return text


def public_tracking_uri() -> str:
    """The tracking URI as it may be shown or recorded: credentials in it redacted."""
    return redact(tracking_uri())


# A config key naming a credential (a word of the key, split at `.`, `_` and `-`).
_SECRET_WORDS = {"password", "passwd", "pwd", "secret", "token", "credential", "credentials", "apikey", "auth"}
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key")}
# A URL carrying `user:password@` (a bare `user@`, e.g. git@host, names no secret).
_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]+:[^/@\s]+@")


# ...unless the key names where the secret is kept (`token_env: TUNELINE_SERVE_TOKEN`), which is the right way.
_REFERENCE_WORDS = {"env", "var", "variable", "block", "file", "path"}


def _words(text: str) -> list[str]:
    return [word for word in re.split(r"[^a-z0-9]+", text.lower()) if word]


def _credential_key(key: str) -> bool:
    words = _words(key)
    if _REFERENCE_WORDS & set(words):
        return False
    return bool(_SECRET_WORDS & set(words)) or any(pair in zip(words, words[1:]) for pair in _SECRET_PAIRS)


def find_secrets(raw: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted path, "key" or "url") for each place in a raw config (YAML + overrides) whose key names a credential
    or whose value is a URL with a password in it."""
    found: list[tuple[str, str]] = []
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if _credential_key(str(key)) and value not in (None, "", [], {}):
                found.append((path, "key"))
            else:
                found += find_secrets(value, path)
    elif isinstance(raw, list):
        for index, value in enumerate(raw):
            found += find_secrets(value, f"{prefix}[{index}]")
    elif isinstance(raw, str) and _URL_PASSWORD.search(raw):
        found.append((prefix, "url"))
    return found


def refuse_secrets(raw: Any, source: str) -> None:
    """ConfigError naming each credential in a raw config and where it belongs instead.

    A config is logged whole to MLflow and shown in the Prefect UI, so a secret in it is a secret leaked.
    The message names keys, never values.
    """
    from tuneline.errors import ConfigError

    found = find_secrets(raw)
    if not found:
        return
    problems = [f"{path} holds a URL with a password in it: drop `user:password@` and give the credentials through "
                "the environment of whatever reads that URL" if kind == "url" else
                f"{path} looks like a credential: remove it and set {secret_advice(path)}" for path, kind in found]
    raise ConfigError(f"invalid config ({source}): secrets never go in a config (it is logged with the run); "
                      + "; ".join(problems))


def secret_advice(path: str) -> str:
    """Where the secret that a config key `path` tried to hold belongs: its variable and Secret block."""

    def same(word: str, other: str) -> bool:  # serving ~ serve, tracking ~ track
        return word == other or len(os.path.commonprefix([word, other])) >= 4

    words = _words(path)
    scores = {variable: sum(any(same(w, v) for v in _words(variable)) for w in words) for variable in SECRET_VARIABLES}
    best = max(scores.values())
    chosen = [variable for variable, score in scores.items() if score == best] if best else list(SECRET_VARIABLES)
    return " or ".join(f"the environment variable {v} (or the Prefect Secret block {SECRET_VARIABLES[v]!r})"
                       for v in chosen)


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
        raise ConfigError(f"no Prefect server answers at PREFECT_API_URL={redact(api)} ({redact(str(exc))}); start one "
                          "(`make services-up`) or fix the variable") from None
    return api
