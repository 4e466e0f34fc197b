"""The retrain flow's configuration: one pydantic model, nested by stage.

Prefect renders it as the run form in the UI; the CLI reads it from YAML plus
`key=value` overrides. Defaults are the embedded default: the shipped sample
data and the built-in MiniLM-L6 model on CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuneline.errors import ConfigError
from tuneline.kinds import KINDS, NAMES, kind
from tuneline.settings import refuse_secrets


class _Section(BaseModel):
    # A misspelt key (train.epoch=1) must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


PiiPolicy = Literal["report", "mask", "fail"]
PiiKind = Literal["email", "phone", "card", "ip"]


class TextChecksConfig(_Section):
    """Checks built for fine-tuning text. The validate stage runs them with the suite; label coverage per split
    runs in the split stage. Each reports like an expectation (count, share, example rows)."""

    max_truncated_share: float = Field(
        0.05, ge=0, le=1,
        description="Largest share of rows longer than train.max_length tokens, counted with the real tokenizer of "
        "train.base_model (they would be truncated in training). 1 reports without failing.",
    )
    pii: PiiPolicy = Field(
        "report",
        description="Emails, phone numbers, card numbers (Luhn-checked) and IP addresses in the text (and in targets "
        "of generation tasks): `report` counts them, `mask` also replaces them by [EMAIL], [PHONE], [CARD], [IP] "
        "before training, `fail` stops the run.",
    )
    pii_kinds: list[PiiKind] = Field(["email", "phone", "card", "ip"], description="The kinds of PII looked for.")
    min_rows_per_label: int = Field(
        1, ge=0, le=1_000_000,
        description="Classification: every label needs at least this many rows in each of train, validation and test.",
    )
    max_imbalance_ratio: float | None = Field(
        None, ge=1,
        description="Classification: largest allowed ratio of the most to the least frequent label's rows; "
        "empty: the ratio is reported, never fails.",
    )
    min_classes: int = Field(
        2, ge=1, le=1_000_000,
        description="Classification: fewest distinct labels the data must hold (a file of one class cannot train a "
        "classifier; it is usually a filtered or truncated export).",
    )
    # Why 0.15: real phrase datasets repeat short phrases (the SST-2 train file: 13.0% of its 67k rows repeat an
    # earlier row up to case and punctuation, "a beautifully" / "a beautifully ,"), and that is harmless: cleaning
    # drops every repeat (counted, in data/dropped_rows.csv) and the split keeps near-duplicates in one split, so
    # no copy reaches both training and test. What this check is for is a broken export: a re-run appended to the
    # file (a quarter of it again is 20% of rows), a file appended to itself (50%), a wrongly mapped column (90%+).
    max_duplicate_share: float = Field(
        0.15, ge=0, le=1,
        description="Largest share of rows whose text repeats an earlier row's up to case, punctuation and spacing "
        "(input and target, for generation tasks). Cleaning drops them, but many mean a broken export; 1 reports only.",
    )
    # Why 0.01: annotators disagree on a few near-identical phrases (SST-2 train: 0.5% of rows are texts equal up to
    # punctuation that carry both labels); a join or merge bug that pairs texts with another file's labels, or a
    # label column flipped in one export, contradicts far more rows than that.
    max_label_conflict_share: float = Field(
        0.01, ge=0, le=1,
        description="Classification: largest share of rows whose text (up to case, punctuation and spacing) also "
        "appears with another label. Cleaning keeps the first row's label; 1 reports only.",
    )
    max_numeric_text_share: float = Field(
        0.5, ge=0, le=1,
        description="Classification and regression: largest share of texts that hold no word (numbers, ids, dates): "
        "more means data.text_column names the wrong column.",
    )
    max_top_text_share: float = Field(
        0.5, ge=0, le=1,
        description="Classification and regression: largest share of rows holding the most frequent text (\"N/A\", "
        "a category): more means data.text_column names the wrong column.",
    )
    chat_template: str | None = Field(
        None,
        description="causal_lm: the format every prompt must already have, with {prompt} where the user's text goes "
        "(e.g. `<|user|>\\n{prompt}\\n<|assistant|>\\n`), or `tokenizer` for the chat template of "
        "train.base_model's tokenizer. Prompts are checked, not rewritten. Empty: no template check.",
    )

    @field_validator("chat_template")
    @classmethod
    def _one_placeholder(cls, template: str | None) -> str | None:
        if template is not None and template != "tokenizer" and template.count("{prompt}") != 1:
            raise ValueError("chat_template must hold {prompt} exactly once (or be `tokenizer`)")
        return template


class DriftConfig(_Section):
    """How far a new batch may move from the data the champion was trained on (`tuneline.validation.drift`).

    Why these defaults: a fresh sample of the same data moves its label shares by a few points
    (0.00-0.05 for 100-250 rows of the shipped sample), its length KS statistic stays near
    1/sqrt(rows) (0.06 for 240 vs 240 rows) and keeps 95%+ of its word occurrences known; so
    0.2, 0.3 and 0.5 leave a wide margin. They fail a batch that is plainly something else: a
    fifth of the rows moved to another class, texts of another length regime (the median doubled
    or halved), another language (under 10% known). A new domain in the same language keeps
    about 70-80% known (function words), so to catch topic drift raise min_vocabulary_overlap to
    about 0.85. A measure fails only when it is beyond its bound *and* unlikely to be sampling
    noise (p-value below `significance`), so a batch of a few dozen rows is not failed for its size.
    """

    enabled: bool = Field(
        True,
        description="Compare each batch with the reference and fail the run beyond the bounds; false only logs the "
        "batch's profile (the next run's reference).",
    )
    reference: str = Field(
        "champion", min_length=1,
        description="`champion`: the data profile logged with the run of the model holding the champion alias (none "
        "yet: reported, not failed); or a data file read like data.path, with the same columns.",
    )
    max_label_shift: float = Field(
        0.2, gt=0, le=1,
        description="Largest total variation distance between the label shares (classification: half the sum of "
        "the share changes, 0.2 = a fifth of the rows changed class) or KS statistic of the target (regression).",
    )
    max_length_ks: float = Field(
        0.3, gt=0, le=1,
        description="Largest two-sample Kolmogorov-Smirnov statistic between the text lengths (characters).",
    )
    min_vocabulary_overlap: float = Field(
        0.5, ge=0, le=1,
        description="Smallest share of the batch's word occurrences whose word is in the reference vocabulary.",
    )
    significance: float = Field(
        0.01, gt=0, le=1,
        description="A shift beyond its bound fails only if its p-value is below this (chi-square for labels, KS "
        "for lengths and regression targets); 1 fails on the bound alone.",
    )


class DataConfig(_Section):
    path: str = Field(
        "builtin:sample-reviews",
        description="CSV, TSV, JSONL or Parquet file, a folder saved by `datasets`, "
        "`builtin:sample-reviews` (the shipped classification sample) or `builtin:sample-seq2seq` (text to summary).",
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "datasets"] = Field(
        "auto", description="File format; `auto` picks it from the extension."
    )
    text_column: str = Field("text", description="Column holding the input text.")
    label_column: str = Field(
        "label", description="Column holding the class label, the number (regression) or the target text (generation)."
    )
    labels: list[str] | None = Field(
        None,
        description="Allowed labels, in class-id order; a row with any other label is an error naming the row. "
        "Empty: the sorted distinct labels of the data, which must then be all numbers or all words.",
    )
    normalize_labels: bool = Field(
        False,
        description="Classification: labels equal up to case and surrounding whitespace (`positive`, `POSITIVE`, "
        "` Positive `) or one number written two ways (`1`, `1.0`) become one label, the spelling data.labels lists or "
        "else the most frequent. False: such labels are an error naming the spellings.",
    )
    expectation_suite: str = Field(
        "text_classification",
        description="Great Expectations suite: a name in expectations/ or a path to a suite JSON file.",
    )
    checks: TextChecksConfig = Field(
        TextChecksConfig(),
        description="Checks built for fine-tuning text, run with the suite: token lengths, PII, labels, prompts.",
    )
    drift: DriftConfig = Field(
        DriftConfig(),
        description="Drift of each batch from the champion's training data: label shares, text lengths, vocabulary.",
    )
    cache: bool = Field(
        True,
        description="Re-use the ingest, validate, clean and split results of an earlier run with the same data (by "
        "content hash), settings and code; false recomputes them and refreshes the cache.",
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _numbers_are_names(cls, labels: Any) -> Any:
        # data.labels=[0, 1] reaches us as YAML integers: class ids, named as a CSV names them ("0", "1").
        if isinstance(labels, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in labels]
        return labels

    @field_validator("labels")
    @classmethod
    def _labels_distinct(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None:
            if len(labels) < 2:
                raise ValueError("a classifier needs at least two labels")
            if len(set(labels)) != len(labels):
                raise ValueError(f"labels must be distinct, got {labels}")
        return labels


class SplitConfig(_Section):
    train_fraction: float = Field(0.8, gt=0, lt=1, description="Share of rows for training.")
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="Share of rows for validation.")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="Share of rows for the held-out test.")
    seed: int = Field(42, description="Seed of the shuffle; the same seed gives the same splits.")
    stratify: bool = Field(
        True,
        description="Keep label proportions equal across splits (random strategy; group strategy as far as whole "
        "groups allow; a time split follows time only).",
    )
    strategy: Literal["random", "group", "time"] = Field(
        "random",
        description="`random`: seeded shuffle; `group`: rows sharing group_column (a user, a document) stay in one "
        "split; `time`: by time_column, the oldest rows train and the most recent test.",
    )
    group_column: str | None = Field(None, description="strategy group: the column whose rows must stay together.")
    time_column: str | None = Field(
        None, description="strategy time: the column holding each row's time (ISO 8601 timestamps or numbers)."
    )
    near_duplicates: Literal["group", "drop", "ignore"] = Field(
        "group",
        description="Texts that are near-duplicates (see near_duplicate_threshold): `group` keeps each group in one "
        "split, `drop` keeps the first row of each group, `ignore` does not look. No near-duplicate crosses splits "
        "unless ignored; removed rows are logged with their reason.",
    )
    near_duplicate_threshold: float = Field(
        0.8, gt=0, le=1,
        description="Texts whose character n-gram Jaccard similarity, after normalising case, whitespace and "
        "punctuation, reaches this are near-duplicates (1: only texts equal up to case and punctuation).",
    )
    near_duplicate_ngram: int = Field(5, ge=2, le=20, description="Characters per n-gram for near-duplicates.")
    expected_test_hash: str | None = Field(
        None,
        description="The sha256 the test split must have (a version's `data.hash.test` tag): the run stops if this "
        "split's test set differs, so it is provably scored on the same rows.",
    )

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train_fraction + self.validation_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:.4f}")
        if self.strategy == "group" and not self.group_column:
            raise ValueError("split.strategy group needs split.group_column (the column whose rows stay together)")
        if self.strategy == "time" and not self.time_column:
            raise ValueError("split.strategy time needs split.time_column (the column holding each row's time)")
        if self.group_column and self.strategy != "group":
            raise ValueError(f"split.group_column applies to strategy group, not {self.strategy}")
        if self.time_column and self.strategy != "time":
            raise ValueError(f"split.time_column applies to strategy time, not {self.strategy}")
        return self


Task = Literal[NAMES]  # one per module of tuneline/kinds
Method = Literal["full", "lora", "qlora", "prefix_tuning", "prompt_tuning", "ia3"]
PEFT_METHODS = ("lora", "qlora", "prefix_tuning", "prompt_tuning", "ia3")
PROMPT_METHODS = ("prefix_tuning", "prompt_tuning")  # virtual tokens: nothing to merge into the base

LOWER_IS_BETTER = frozenset({"loss", "mse", "mae"})


class LoraSettings(_Section):
    r: int = Field(8, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None,
        description="Module names to adapt; empty: peft's default for the architecture (e.g. query/value for BERT, "
        "q_proj/v_proj for Llama, c_attn for GPT-2); `all-linear`: every linear layer but the output head.",
    )


class PromptSettings(_Section):
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Trained virtual tokens (prefix and prompt tuning).")
    init_text: str | None = Field(
        None, description="Prompt tuning only: initialise the virtual tokens from this text instead of at random."
    )


class TrainConfig(_Section):
    base_model: str = Field(
        "builtin:minilm-l6",
        description="`builtin:minilm-l6` (shipped, offline), a local folder, or a Hugging Face model id.",
    )
    method: Method = Field(
        "full",
        description="`full` trains every weight; `lora`, `qlora` (4-bit NF4 base, CUDA only), `prefix_tuning`, "
        "`prompt_tuning` and `ia3` train a small peft adapter and freeze the base.",
    )
    lora: LoraSettings = Field(LoraSettings(), description="LoRA / QLoRA settings.")
    prompt: PromptSettings = Field(PromptSettings(), description="Prefix / prompt tuning settings.")
    modules_to_save: list[str] | None = Field(
        None,
        description="With a peft method: base modules trained in full besides the adapter. Empty: peft's choice "
        "(the new classification head for classification and regression).",
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the training split.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(32, ge=1, le=4096, description="Training batch size per device.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024, description="Micro-batches per optimizer step.")
    eval_batch_size: int = Field(64, ge=1, le=4096, description="Batch size for evaluation and export checks.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="AdamW, or SGD with momentum.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    learning_rate: float = Field(5e-5, gt=0, lt=10, description="Peak learning rate.")
    weight_decay: float = Field(0.01, ge=0, lt=1, description="Weight decay (not on biases and norms).")
    lr_scheduler: Literal["constant", "linear", "cosine", "step", "exponential"] = Field(
        "linear", description="Learning-rate schedule after warm-up."
    )
    lr_gamma: float = Field(
        0.5, gt=0, le=1,
        description="`step`: factor applied every lr_step_size steps; `exponential`: the last step's share of the peak.",
    )
    lr_step_size: int = Field(100, ge=1, description="`step` schedule: optimizer steps between decays.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps spent warming up the learning rate.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this; empty: no clipping.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass to save memory.")
    dropout: float | None = Field(
        None, ge=0, lt=1, description="Override the model's hidden and attention dropout; empty: the model's own."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="`auto`: bf16 on CUDA when supported, fp16 on older CUDA, fp32 on CPU."
    )
    max_length: int = Field(128, ge=8, le=8192, description="Tokens kept per text; longer texts are truncated.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate on the validation split every N steps; empty: each epoch.")
    save_steps: int | None = Field(
        None, ge=1, description="Checkpoint every N steps; empty: at each evaluation. Needed to resume a long run."
    )
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept: the best one by best_metric and the latest.")
    best_metric: str = Field(
        "loss",
        description="Validation metric that picks the best checkpoint and drives early stopping: loss; "
        "accuracy or macro_f1 (classification); mse, mae or r2 (regression).",
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without improvement of best_metric; empty: never."
    )
    resume: bool = Field(
        True,
        description="Continue from the latest checkpoint of the same training job (same data, task and training "
        "settings) when one exists: a retried task, or a re-run after a crash, does not start over.",
    )
    oom_fallback: bool = Field(
        True,
        description="On CUDA out-of-memory, halve the micro-batch and double gradient accumulation (the effective "
        "batch, so the optimisation, stays the same) and go on from the latest checkpoint, down to micro-batch 1.",
    )
    cv_folds: int | None = Field(
        None, ge=2, le=20, description="Also run k-fold cross-validation on train+validation and report mean and spread."
    )
    seed: int = Field(42, description="Seed of initialisation, data order and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="`auto` uses CUDA when present.")
    processes: int | None = Field(
        None, ge=1, le=64,
        description="Data-parallel worker processes (torchrun, DDP): each takes batch_size rows per step. Empty: one "
        "per GPU when several are visible, else 1. Above 1 on CPU it runs gloo DDP (useful to check a setup).",
    )
    logging_steps: int = Field(10, ge=1, description="Log the training loss every this many steps.")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.device == "cpu" and self.method == "qlora":
            raise ValueError("method qlora needs CUDA (bitsandbytes 4-bit kernels); use lora on CPU")
        if self.device == "cpu" and self.precision in ("bf16", "fp16"):
            raise ValueError(f"precision {self.precision} needs CUDA; use fp32 or auto on CPU")
        if self.method == "qlora" and self.precision == "fp32":
            raise ValueError("qlora computes in bf16 or fp16; set precision to auto, bf16 or fp16")
        if (self.early_stopping_patience and self.save_steps and self.eval_steps
                and self.save_steps % self.eval_steps):
            raise ValueError(f"save_steps {self.save_steps} must be a multiple of eval_steps {self.eval_steps} with "
                             "early stopping: the best checkpoint is chosen at evaluations")
        if self.prompt.init_text is not None and self.method != "prompt_tuning":
            raise ValueError("prompt.init_text applies to method prompt_tuning only")
        return self


class GenerationConfig(_Section):
    """Decoding settings for seq2seq and causal_lm evaluation (and, later, serving)."""

    max_new_tokens: int = Field(32, ge=1, le=4096, description="Tokens generated at most per input.")
    do_sample: bool = Field(False, description="Sample instead of greedy / beam search.")
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature.")
    top_k: int = Field(50, ge=0, description="Sample from the k most likely tokens (0: no limit).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: smallest token set with this probability.")
    repetition_penalty: float = Field(1.0, gt=0, le=10, description="Penalty on repeated tokens (1: none).")
    num_beams: int = Field(1, ge=1, le=32, description="Beam search width (1: greedy or sampling).")
    stop_sequences: list[str] = Field([], description="Cut the output at the first of these strings.")

    @model_validator(mode="after")
    def _beams_or_sampling(self) -> GenerationConfig:
        if self.do_sample and self.num_beams > 1:
            raise ValueError("choose sampling (do_sample) or beam search (num_beams > 1), not both")
        return self


class EvaluationConfig(_Section):
    worst_examples: int = Field(20, ge=0, le=10_000, description="Highest-loss test rows kept in the report.")
    slice_column: str | None = Field(
        None, description="Data column to slice test metrics by (e.g. `domain` in the sample); length buckets always."
    )


Quantization = Literal["dynamic", "static", "torch_dynamic", "none"]


class ExportConfig(_Section):
    opset: int = Field(17, ge=14, le=21, description="ONNX opset version.")
    optimize: bool = Field(
        False,
        description="Run onnxruntime's transformer optimiser on the FP32 graph (fused attention, layer norm, GELU); "
        "the optimised graph is parity-checked like the plain one and is what gets quantized and served.",
    )
    quantization: Quantization = Field(
        "dynamic",
        description="`dynamic`: ONNX INT8 weights, activations quantized at run time; `static`: ONNX INT8 QDQ with "
        "activation ranges calibrated on training rows; `torch_dynamic`: PyTorch INT8 Linear layers (TorchScript "
        "file, for serving with PyTorch); `none`: FP32 only.",
    )
    per_channel: bool = Field(
        True, description="One INT8 scale per output channel of each weight: slower to build, far less accuracy lost."
    )
    calibration_method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="`static`: how activation ranges are chosen from the calibration rows."
    )
    calibration_rows: int = Field(128, ge=1, le=100_000, description="`static`: training rows used for calibration.")
    keep_fp32: list[str] = Field(
        [],
        description="Graph nodes left in FP32 when quantizing, as glob patterns on ONNX node names, e.g. "
        "`/classifier/*` (the head) or `/bert/encoder/layer.0/*` (the first layer). Each must match a node.",
    )
    max_accuracy_drop: float = Field(
        0.01, ge=0, le=1,
        description="Largest test-split loss of the quantized model against FP32, as a fraction (0.01 = one point) "
        "of accuracy (classification), R² (regression) or ROUGE-L/100 (generation); more, when the paired test "
        "also finds the loss significant (export.significance), and nothing is registered.",
    )
    # Why a paired test beside the point bound: on 30 test rows one changed row is 3.3 points, which says nothing;
    # on 10,000 rows a 1-point loss is real. The INT8 file fails only when both say so.
    significance: float = Field(
        0.05, gt=0, le=1,
        description="Significance level of the paired test on the same test rows (McNemar's exact test on per-row "
        "correctness for classification, Wilcoxon signed-rank on per-row errors or scores otherwise): a loss beyond "
        "max_accuracy_drop fails only if its p-value is at most this. 1: the point bound alone decides.",
    )
    parity_atol: float = Field(
        1e-4, gt=0, description="Allowed absolute difference between ONNX FP32 and PyTorch outputs."
    )
    parity_rtol: float = Field(
        1e-3, ge=0, description="Allowed difference relative to the PyTorch output, on top of parity_atol."
    )
    parity_rows: int = Field(64, ge=1, description="Validation rows used for the parity check.")
    triton: bool = Field(
        False, description="Also write a Triton model repository (config.pbtxt + model file) next to the ONNX files."
    )

    @model_validator(mode="after")
    def _quantizer_settings(self) -> ExportConfig:
        if self.keep_fp32 and self.quantization not in ("dynamic", "static"):
            raise ValueError(f"keep_fp32 applies to ONNX quantization (dynamic or static), not {self.quantization}")
        if self.optimize and self.quantization == "static":
            raise ValueError("optimize with static quantization: onnxruntime's QDQ quantizer cannot place Q/DQ pairs "
                             "around the optimiser's fused ops; set optimize=false (onnxruntime fuses a QDQ graph "
                             "itself when it loads it) or use dynamic quantization")
        return self


class RegistryConfig(_Section):
    experiment: str = Field("tuneline", description="MLflow experiment name.")
    model_name: str = Field("tuneline-classifier", min_length=1, description="Registered model name in MLflow.")


GateMetric = Literal[tuple(dict.fromkeys(m for k in KINDS.values() for m in k.test_metrics))]  # every kind's test metrics


class SignoffConfig(_Section):
    """When a candidate that passed the gate waits for a person before it takes `champion`."""

    policy: Literal["never", "always", "below_margin"] = Field(
        "never",
        description="`never`: the gate decides alone; `always`: every candidate that passes the gate waits for "
        "approval; `below_margin`: only when its margin over the champion is below `margin`.",
    )
    margin: float = Field(
        0.01, ge=0, le=100,
        description="below_margin: ask when the candidate cleared the gate's bar (champion + min_improvement) on the "
        "primary metric by less than this, in the metric's unit. A first version (no champion) is not asked.",
    )
    timeout_seconds: int = Field(
        86_400, ge=1, le=30 * 86_400,
        description="How long the flow waits for the decision; no answer in time is a rejection (stays challenger).",
    )
    poll_seconds: int = Field(10, ge=1, le=3600, description="How often the paused flow checks for the decision.")


class PromotionConfig(_Section):
    """The quality gate a candidate must pass to take the `champion` alias."""

    primary_metric: GateMetric = Field(
        "accuracy",
        description="Test metric (PyTorch model) the candidate must not be worse on. Defaults per task: accuracy "
        "(classification), mse (regression), rougeL (seq2seq, causal_lm).",
    )
    min_improvement: float = Field(
        0.0, ge=-100, le=100,
        description="Required gain over the champion on the primary metric, in its unit (accuracy 0.01 = one point; "
        "BLEU and ROUGE are 0-100; for mse and mae a gain is a decrease).",
    )
    guarded_metrics: list[GateMetric] = Field(
        ["macro_f1"], description="Metrics that may not get worse by more than max_guarded_drop."
    )
    max_guarded_drop: float = Field(
        0.01, ge=0, description="Largest allowed loss on any guarded metric, in its own unit (BLEU is 0-100)."
    )
    significance: float = Field(
        0.05, gt=0, le=1,
        description="Significance level of the paired test of candidate vs champion on the same rows (McNemar's "
        "exact test on per-row correctness for classification, Wilcoxon signed-rank on per-row errors or scores "
        "otherwise): a loss beyond min_improvement (when it is 0 or less) or max_guarded_drop holds the candidate "
        "only if its p-value is at most this. 1: the point bounds alone decide.",
    )
    # The floor: no version, the first included, becomes champion without beating what a trivial model scores on
    # its own test split. Measured on builtin:sample-reviews with the default run (2026-12-03): MiniLM-L6 0.897 test
    # accuracy against 0.503 (majority class) and 0.857 (bag-of-words): the default model clears the bag-of-words bar.
    require_beat_bow: bool = Field(
        True,
        description="Classification: the candidate's primary metric must also beat a bag-of-words baseline (TF-IDF + "
        "logistic regression fitted on the run's train split, scored on its test split); false: only the majority "
        "class. The trivial baseline (majority class, train mean, copied input) must always be beaten.",
    )
    min_metrics: dict[GateMetric, float] = Field(
        {},
        description="Absolute floor per test metric, e.g. {accuracy: 0.8}: at least this (at most, for mse and mae) "
        "before a version can become champion, the first included.",
    )
    signoff: SignoffConfig = Field(
        SignoffConfig(),
        description="A person's approval between challenger and champion: the retrain flow pauses for it in Prefect.",
    )


class RetrainConfig(_Section):
    """Everything one `retrain` run needs; each section belongs to one stage."""

    task: Task = Field(
        "classification",
        description="; ".join(f"{k.name}: {k.description}" for k in KINDS.values())
        + ". For generation tasks data.label_column holds the target.",
    )
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    generation: GenerationConfig = GenerationConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    export: ExportConfig = ExportConfig()
    registry: RegistryConfig = RegistryConfig()
    promotion: PromotionConfig = PromotionConfig()

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, raw: Any) -> Any:
        """Defaults that only make sense for classification follow the task, unless the user set them."""
        if not isinstance(raw, dict) or raw.get("task", "classification") not in KINDS:
            return raw  # not a mapping, or an unknown task that field validation reports

        def given(section: str) -> dict[str, Any]:
            value = raw.get(section) or {}
            return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else dict(value)

        task = KINDS[raw.get("task", "classification")]
        primary, guarded, drop = task.primary_metric, list(task.guarded_metrics), task.max_guarded_drop
        promotion, data = given("promotion"), given("data")
        if "primary_metric" not in promotion and "guarded_metrics" not in promotion:
            promotion = {"primary_metric": primary, "guarded_metrics": guarded, "max_guarded_drop": drop} | promotion
        data.setdefault("expectation_suite", task.suite)
        return raw | {"promotion": promotion, "data": data}

    @model_validator(mode="after")
    def _fits_the_task(self) -> RetrainConfig:
        task, train, promotion = self.task, self.train, self.promotion
        what = kind(task)
        if train.best_metric not in what.validation_metrics:
            raise ValueError(f"train.best_metric {train.best_metric!r} is not reported for task {task}; "
                             f"choose one of {list(what.validation_metrics)}")
        for metric in [promotion.primary_metric, *promotion.guarded_metrics]:
            if metric not in what.test_metrics:
                raise ValueError(f"promotion metric {metric!r} is not measured for task {task}; "
                                 f"choose from {list(what.test_metrics)}")
        if train.method in PEFT_METHODS and train.modules_to_save == [] and what.model == "sequence_classification":
            raise ValueError(f"method {train.method} freezes the base model and modules_to_save is empty, so the "
                             "newly initialised classification head would never be trained; leave modules_to_save "
                             "empty (unset) or name the head (e.g. [classifier])")
        if self.data.labels is not None and not what.has_classes:
            raise ValueError(f"data.labels lists classes; task {task} has none: leave data.labels empty")
        if what.generative and self.export.optimize:
            raise ValueError("export.optimize fuses BERT-family encoder graphs (classification, regression); "
                             f"set it to false for task {task}")
        if what.generative and self.export.quantization in ("static", "torch_dynamic"):
            raise ValueError(f"export.quantization {self.export.quantization} covers classification and regression; "
                             f"generative graphs (task {task}) quantize with dynamic or none")
        if train.method in PROMPT_METHODS and what.model == "seq2seq" and train.base_model.startswith("builtin:"):
            raise ValueError(f"method {train.method} cannot adapt a BERT-to-BERT encoder-decoder built from "
                             f"{train.base_model}; use full, lora or ia3, or a native seq2seq model such as T5")
        return self

    def to_yaml(self) -> str:
        """The resolved config as YAML, loadable by `load_config`."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """`{"train.epochs": 1.0, ...}`: the form MLflow params take."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, inner in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, inner)
            else:
                out[prefix] = value

        walk("", self.model_dump(mode="json"))
        return out


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn `["train.epochs=1", "data.labels=[neg, pos]"]` into a nested dict.

    Values are read as YAML scalars or lists, so numbers, booleans and lists
    keep their type; pydantic then validates them.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def describe_errors(exc: ValidationError) -> str:
    """`train.epochs: Input should be greater than 0; ...`: each invalid field with its path."""
    return "; ".join(
        ("{}: ".format(".".join(str(p) for p in err["loc"])) if err["loc"] else "")
        + err["msg"].removeprefix("Value error, ")
        for err in exc.errors()
    )


def load_config(path: Path | str | None = None, overrides: list[str] | None = None,
                model: type[BaseModel] | None = None) -> Any:
    """Read a YAML config (optional), apply `key=value` overrides, validate as `model` (default: RetrainConfig).

    Raises `ConfigError` naming the file and each invalid field.
    """
    model = model or RetrainConfig
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(raw).__name__}")
    if overrides:
        raw = _merge(raw, parse_overrides(overrides))
        source += " + overrides"
    refuse_secrets(raw, source)  # before validation: the error must not echo the value
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid config ({source}): {describe_errors(exc)}") from None
