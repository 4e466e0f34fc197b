"""Task kinds: everything the stages ask of a run's `task`, declared once per kind.

One module per kind (`classification`, `regression`, `seq2seq`, `causal_lm`), each a `Kind` (`base.py`): what a
row's label holds, the model class, the suite, the metrics and the gate's defaults, the export and runtime, what
serving returns, the shipped sample. Stages call `kind(task)` and ask it; they do not compare task names.

Imports only `tuneline.errors` from tuneline (config.py builds its `Task` choices from `NAMES`); a kind's heavier
behaviour imports its libraries (transformers, sklearn) inside the function.
"""

from __future__ import annotations

from tuneline.errors import ConfigError
from tuneline.kinds.base import Kind
from tuneline.kinds.causal_lm import CAUSAL_LM
from tuneline.kinds.classification import CLASSIFICATION
from tuneline.kinds.regression import REGRESSION
from tuneline.kinds.seq2seq import SEQ2SEQ

KINDS: dict[str, Kind] = {k.name: k for k in (CLASSIFICATION, REGRESSION, SEQ2SEQ, CAUSAL_LM)}
NAMES: tuple[str, ...] = tuple(KINDS)
GENERATIVE: tuple[str, ...] = tuple(name for name, k in KINDS.items() if k.generative)


def kind(task: str) -> Kind:
    """The kind named `task`; `ConfigError` naming the known ones."""
    try:
        return KINDS[task]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(NAMES)}") from None


__all__ = ["GENERATIVE", "KINDS", "NAMES", "Kind", "kind"]
