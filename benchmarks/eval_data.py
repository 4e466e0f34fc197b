"""Where a benchmark's evaluation sentences come from, resolved the same way by every benchmark.

`eval_texts(path)`: the texts of `path` when one is given (a file, or `builtin:sample-reviews`); else the shared
SST-2 dev copy (`../shared/data/sst2/dev.tsv` beside the repository) when it exists; else SST-2's validation
split through `datasets` (`load_dataset("glue", "sst2")`) when the network allows; else the sample the package
ships (`builtin:sample-reviews`, as `data.path` resolves it). Nothing outside the repository is required.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_SST2 = REPO.parent / "shared" / "data" / "sst2"
TEXT_COLUMNS = ("sentence", "text")  # SST-2's column, then tuneline's


def read_texts(path: Path | str, column: str | None = None) -> list[str]:
    """The text column of a CSV / TSV / JSONL / Parquet file or a `builtin:` sample (`sentence`, else `text`)."""
    import pandas as pd

    from tuneline.data.loading import resolve_data_path

    path = resolve_data_path(str(path))
    suffix = path.suffix.lower()
    if suffix == ".tsv":  # quoting=3: SST-2 has bare quotes inside sentences
        frame = pd.read_csv(path, sep="\t", quoting=3, dtype=str, keep_default_na=False)
    elif suffix in (".jsonl", ".json"):
        frame = pd.read_json(path, lines=True, dtype=False)
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    name = column or next((c for c in TEXT_COLUMNS if c in frame.columns), None)
    if name not in frame.columns:
        raise SystemExit(f"{path}: no {column or ' or '.join(TEXT_COLUMNS)} column (columns: {list(frame.columns)})")
    return [str(text) for text in frame[name]]


def sst2_download() -> list[str] | None:
    """SST-2's validation sentences (the same 872 as dev.tsv) through `datasets`; None when it cannot be had."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return None
    try:  # without a name server for the hub, datasets retries for about 20 s before it gives up
        socket.getaddrinfo("huggingface.co", 443)
    except OSError:
        return None
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    try:
        from datasets import load_dataset

        return list(load_dataset("glue", "sst2", split="validation")["sentence"])
    except Exception:  # noqa: BLE001 (no network, no hub, no datasets: the next fallback)
        return None


def eval_texts(path: Path | str | None = None, column: str | None = None) -> tuple[list[str], str]:
    """(texts, where they came from), by the order in the module docstring."""
    if path:
        return read_texts(path, column), str(path)
    if (SHARED_SST2 / "dev.tsv").is_file():
        return read_texts(SHARED_SST2 / "dev.tsv", column), str(SHARED_SST2 / "dev.tsv")
    texts = sst2_download()
    if texts:
        return texts, 'datasets: load_dataset("glue", "sst2"), validation'
    return read_texts("builtin:sample-reviews", column), "builtin:sample-reviews"
