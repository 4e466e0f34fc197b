"""A registered version made ready to predict: the files serving reads, the onnxruntime predictor, and the holder
that swaps versions as an alias moves."""

from __future__ import annotations

import functools
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tuneline.kinds import kind
from tuneline.errors import RegistrationError
from tuneline.serving.settings import ServeSettings

log = logging.getLogger("tuneline.serving")

@dataclass
class LoadedModel:
    """One registered version, ready to predict."""

    name: str
    version: str
    task: str
    labels: tuple[str, ...]
    # texts, the batch's parameters, one seed per text (sampling) -> one output per text
    predict: Callable[[list[str], dict[str, Any], list[tuple[int, int]] | None], list[dict[str, Any]]]
    folder: Path
    loaded_at: float = field(default_factory=time.time)
    decoding: Callable[[dict[str, Any]], Any] | None = None  # generation: a request's parameters, validated
    # A batch's texts -> the index lists to predict separately (and at once, on the free model threads);
    # None: the batch runs as one call (generation: the rows decode together).
    pieces: Callable[[list[str]], list[list[int]]] | None = None


# What serving reads of a version: MLmodel (task, max_length, decoding settings), one ONNX model (INT8 when
# there is one) and the tokenizer files. The HF weights and the other precision stay in the registry.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json")


def files_to_serve(available: list[str]) -> list[str]:
    """The paths of a version that `load_model` downloads, given what is under its `artifacts/`."""
    for choice in ("artifacts/generator.int8", "artifacts/generator", "artifacts/model.int8.onnx", "artifacts/model.onnx"):
        if choice in available:
            tokenizer = [] if "generator" in choice else [f"artifacts/hf_model/{name}" for name in TOKENIZER_FILES]
            return ["MLmodel", choice, *tokenizer]
    raise RegistrationError(f"the version has no ONNX model to serve (model.onnx or generator/ under artifacts/); "
                            f"it holds {sorted(available)}")


# The fixed cost of one more onnxruntime call, in characters of padding. MiniLM-L6 INT8 on one thread spends
# about 0.09 ms per token of its padded input and 0.2 ms + 0.02 ms per token of padded length per call
# (benchmarks/README.md): at SST-2's 25 tokens a call costs what 7.6 tokens of padding do, 36 characters of
# English at 4.8 a token. Larger models cost more per token, so this errs towards fewer, fuller calls.
CALL_CHARS = 36


def length_pieces(texts: list[str], texts_per_run: int, call_chars: int = CALL_CHARS) -> list[list[int]]:
    """The indices of `texts`, shortest first, cut into pieces of at most `texts_per_run`, each padded to its
    longest text. The cuts minimise padding plus `call_chars` per call (characters: a cheap proxy for tokens), so
    a long text runs alone rather than padding three short ones, and texts of like length still run together."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    lengths = [len(texts[i]) for i in order]
    # cost[end]: the cheapest cut of the `end` shortest texts; its last piece starts at start[end]
    cost, start = [0] + [math.inf] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for size in range(1, min(texts_per_run, end) + 1):
            option = cost[end - size] + call_chars + size * lengths[end - 1]
            if option < cost[end]:
                cost[end], start[end] = option, end - size
    pieces, end = [], len(order)
    while end:
        pieces.append(order[start[end] : end])
        end = start[end]
    return pieces[::-1]


def in_order(pieces: list[list[int]], parts: list[list]) -> list:
    """The results of every piece (`parts[k]` for the indices `pieces[k]`), back in the order of the indices."""
    results: list = [None] * sum(map(len, pieces))
    for piece, part in zip(pieces, parts):
        for i, result in zip(piece, part):
            results[i] = result
    return results


def run_sorted(predict: Callable[[list[str]], list], texts: list[str], texts_per_run: int) -> list:
    """`predict` over `texts` piece by piece (`length_pieces`); the results come back in the order of `texts`."""
    pieces = length_pieces(texts, texts_per_run)
    return in_order(pieces, [predict([texts[i] for i in piece]) for piece in pieces])


def load_model(name: str, version: str, threads: int | None = None, scratch: Path | None = None,
               texts_per_run: int = 4) -> LoadedModel:
    """Download the files serving needs of a version and build its onnxruntime predictor (INT8 ONNX when there is one)."""
    from tuneline.registry import store as registry

    folder = Path(tempfile.mkdtemp(prefix=f"{name}-v{version}-", dir=scratch))
    wanted = files_to_serve(registry.list_version_files(name, version))
    registry.download_version_files(name, version, wanted, folder)
    settings = (yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
                .get("config") or {})
    task, max_length = settings.get("task", "classification"), int(settings.get("max_length", 128))
    if kind(task).generative:
        from tuneline.config import GenerationConfig
        from tuneline.runtime.generator import OnnxGenerator

        generator = OnnxGenerator(folder / wanted[1], threads, spinning=False)
        defaults = dict(settings.get("generation") or {})

        def decoding(parameters: dict[str, Any]) -> GenerationConfig:
            return GenerationConfig(**(defaults | parameters))

        def predict(texts: list[str], parameters: dict[str, Any], seeds: list[tuple[int, int]] | None = None,
                    ) -> list[dict[str, Any]]:
            generated = generator.generate(texts, decoding(parameters), seeds or 0, batch_size=len(texts))
            return [{"generated": text} for text in generated]

        return LoadedModel(name, version, task, (), predict, folder, decoding=decoding)
    from tuneline.runtime.classifier import OnnxClassifier

    # No spinning: the event loop shares the cores, and threads busy-waiting between operators starve it.
    classifier = OnnxClassifier(folder / wanted[1], folder / "artifacts" / "hf_model", max_length, threads,
                                spinning=False)
    what = kind(task)

    def predict(texts: list[str], *_) -> list[dict[str, Any]]:
        """Logits piece by piece (shortest texts together), then the kind's scores and answers, in request order."""
        logits = run_sorted(lambda piece: list(classifier.logits(classifier.encode(piece))), texts, texts_per_run)
        return what.answers(what.scores(np.stack(logits)), classifier.labels) if logits else []

    return LoadedModel(name, version, task, classifier.labels if what.has_classes else (), predict, folder,
                       pieces=functools.partial(length_pieces, texts_per_run=texts_per_run))


class ModelHolder:
    """The version being served; swapped whole, so a batch that took a reference keeps a working model."""

    def __init__(self, settings: ServeSettings, scratch: Path):
        self.settings, self.scratch = settings, scratch
        self.name, self.reference = settings.reference()
        self.current: LoadedModel | None = None

    def refresh(self) -> bool:
        """Load the version the reference points at, if it is not the one served; True when it swapped."""
        from tuneline.registry import store as registry

        version = str(registry.resolve_version(self.name, self.reference).version)
        if self.current is not None and self.current.version == version:
            return False
        started = time.perf_counter()
        model = load_model(self.name, version, self.settings.model_threads(), self.scratch,
                           self.settings.texts_per_run)
        previous, self.current = self.current, model  # one assignment: readers see the old model or the new one
        took = time.perf_counter() - started
        if previous is None:
            log.info("serving %s version %s (%s) from %s, loaded in %.1f s", self.name, version, model.task,
                     self.settings.model_uri, took)
        else:
            log.info("%s moved: now serving version %s (was %s), loaded in %.1f s; requests in flight finish on "
                     "version %s", self.settings.model_uri, version, previous.version, took, previous.version)
            shutil.rmtree(previous.folder, ignore_errors=True)  # its sessions stay alive while referenced
        return True
