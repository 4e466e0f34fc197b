"""ONNX export of seq2seq and causal LMs with past key values, and the onnxruntime-only generator (CPU, tiny models)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import make_pairs
from tuneline.config import GenerationConfig, TrainConfig
from tuneline.errors import ConfigError, ExportParityError
from tuneline.export.generative import (
    CROSS_KV_FILE,
    DECODER_FILE,
    ENCODER_FILE,
    RUNTIME_FILE,
    check_generative_parity,
    export_causal_lm,
    export_generative,
)
from tuneline.evaluation.generation import generate as torch_generate
from tuneline.runtime.generator import OnnxGenerator, cut_at_stop, penalize_repetition, warp

# Prompts of clearly different lengths, so every batch is padded.
TEXTS = list(make_pairs(6)["text"]) + ["hi", "a much longer prompt that goes on, and on, about an old blue item"]
MAX_LENGTH = 64
GREEDY = GenerationConfig(max_new_tokens=6)
TASKS = {"t5": "seq2seq", "bert2bert": "seq2seq", "gpt2": "causal_lm", "llama": "causal_lm"}


@pytest.fixture(scope="module")
def model_dirs(tiny_model, tiny_bert, tmp_path_factory) -> dict[str, Path]:
    """Saved untrained models: T5, GPT-2, Llama as built, BERT-to-BERT as tuneline warm-starts and saves it."""
    import torch
    from transformers import AutoTokenizer

    from tuneline.training.modeling import load_base, save_trained

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    config = TrainConfig(base_model=str(tiny_bert), method="full")
    bert2bert = save_trained(load_base("seq2seq", str(tiny_bert), config, (), tokenizer), tokenizer, "seq2seq", config,
                             str(tiny_bert), tmp_path_factory.mktemp("bert2bert") / "hf_model")
    return {"t5": tiny_model("t5"), "gpt2": tiny_model("gpt2"), "llama": tiny_model("llama"), "bert2bert": bert2bert}


@pytest.fixture(scope="module")
def exported(model_dirs, tmp_path_factory):
    """`exported(name)` -> (export, parity report), each architecture exported and verified once."""
    done = {}

    def get(name: str):
        if name not in done:
            done[name] = export_generative(model_dirs[name], tmp_path_factory.mktemp(f"onnx-{name}"), TASKS[name],
                                           opset=17, max_length=MAX_LENGTH, parity_texts=TEXTS, atol=1e-4)
        return done[name]

    return get


def torch_tokens(model_dir: Path, task: str, texts: list[str], settings: GenerationConfig, eos: int | None = None):
    """transformers' generate ids for one batch, as tuneline.evaluation.generation.generate calls it (rows as lists)."""
    import torch
    from transformers import AutoTokenizer

    from tuneline.evaluation.generation import decoding_kwargs
    from tuneline.training.modeling import load_trained
    from tuneline.training.engine import end_token_id

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left" if task == "causal_lm" else "right"
    batch = tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    batch.pop("token_type_ids", None)
    with torch.inference_mode():
        ids = load_trained(model_dir, task).generate(**batch, **decoding_kwargs(settings),
                                                     eos_token_id=end_token_id(tokenizer) if eos is None else eos,
                                                     pad_token_id=tokenizer.pad_token_id)
    if task == "causal_lm":
        ids = ids[:, batch["input_ids"].shape[1]:]
    return ids.tolist()


def graph_dims(path: Path) -> dict[str, list]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*graph.input, *graph.output]}


@pytest.mark.parametrize("name", ["t5", "bert2bert", "gpt2", "llama"])
def test_export_passes_parity_with_dynamic_past_axes(name, exported):
    export, parity = exported(name)
    assert parity.max_abs_diff <= 1e-4
    # one row alone and a padded batch of several lengths were compared
    assert [shape[0] for shape in parity.shapes] == [1, len(TEXTS)] and parity.shapes[0][1] != parity.shapes[1][1]
    decoder = graph_dims(export.files["decoder"])
    past = "past_key_values.0.decoder.key" if TASKS[name] == "seq2seq" else "past_key_values.0.key"
    assert isinstance(decoder["input_ids"][0], str) and isinstance(decoder["input_ids"][1], str)  # batch, new tokens
    assert isinstance(decoder[past][0], str) and isinstance(decoder[past][2], str)  # batch, past length
    runtime = json.loads(export.files["runtime"].read_text())
    assert runtime["task"] == TASKS[name] and runtime["num_layers"] == 2
    assert (export.output_dir / "tokenizer.json").is_file()
    if TASKS[name] == "seq2seq":
        assert set(export.files) >= {"encoder", "cross_kv", "decoder"}
        # cross-attention K/V come from their own graph, computed once: the decoder takes no encoder states
        assert "encoder_hidden_states" not in decoder and "past_key_values.1.encoder.value" in decoder


@pytest.mark.parametrize("name", ["t5", "bert2bert", "gpt2", "llama"])
def test_greedy_output_matches_pytorch_generate_token_for_token(name, exported, model_dirs):
    export, _ = exported(name)
    generator = OnnxGenerator(export.output_dir, threads=1)
    ours = generator.generate_tokens(TEXTS, GREEDY, batch_size=len(TEXTS))
    assert ours == torch_tokens(model_dirs[name], TASKS[name], TEXTS, GREEDY)
    # and the texts, in batches of 3 (the last one shorter), as tuneline.evaluation.generation.generate gives them
    texts = torch_generate(model_dirs[name], TASKS[name], TEXTS, GREEDY, MAX_LENGTH, batch_size=3, device="cpu")
    assert generator.generate(TEXTS, GREEDY, batch_size=3) == texts


@pytest.mark.parametrize("name", ["t5", "gpt2"])  # untrained, both repeat themselves: the penalty changes their output
def test_repetition_penalty_matches_pytorch(name, exported, model_dirs):
    settings = GenerationConfig(max_new_tokens=6, repetition_penalty=1.5)
    ours = OnnxGenerator(exported(name)[0].output_dir).generate_tokens(TEXTS, settings, batch_size=len(TEXTS))
    assert ours == torch_tokens(model_dirs[name], TASKS[name], TEXTS, settings)
    assert ours != OnnxGenerator(exported(name)[0].output_dir).generate_tokens(TEXTS, GREEDY, batch_size=len(TEXTS))


@pytest.mark.parametrize("name", ["t5", "llama"])
def test_rows_stop_at_the_end_token_and_are_padded_like_pytorch(name, exported, model_dirs, tmp_path):
    export, _ = exported(name)
    rows = OnnxGenerator(export.output_dir).generate_tokens(TEXTS, GREEDY, batch_size=len(TEXTS))
    skip = 1 if TASKS[name] == "seq2seq" else 0  # the decoder start token
    end = rows[0][skip + 1]  # a token the first row generates: make it the end token
    assert any(end not in row[skip:] for row in rows)  # some row goes on past it
    copy = tmp_path / "export"
    shutil.copytree(export.output_dir, copy)
    runtime = json.loads((copy / RUNTIME_FILE).read_text())
    (copy / RUNTIME_FILE).write_text(json.dumps(runtime | {"eos_token_id": end}))
    stopped = OnnxGenerator(copy).generate_tokens(TEXTS, GREEDY, batch_size=len(TEXTS))
    first_end = stopped[0].index(end, skip)
    assert set(stopped[0][first_end + 1:]) <= {runtime["pad_token_id"]}
    assert stopped == torch_tokens(model_dirs[name], TASKS[name], TEXTS, GREEDY, eos=end)


def test_sampling_is_seeded_and_top_k_1_is_greedy(exported):
    generator = OnnxGenerator(exported("llama")[0].output_dir)
    hot = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=5.0, top_k=0)
    first = generator.generate_tokens(TEXTS, hot, seed=1)
    assert generator.generate_tokens(TEXTS, hot, seed=1) == first
    assert generator.generate_tokens(TEXTS, hot, seed=2) != first
    # Each row draws from its own (seed, row) generator: alone, or in other batches, it draws the same tokens.
    alone = [generator.generate_tokens([text], hot, seed=[(1, i)])[0] for i, text in enumerate(TEXTS)]
    assert [row[: len(mine)] for row, mine in zip(first, alone)] == alone  # a batch pads rows that ended early
    assert generator.generate_tokens(TEXTS, hot, seed=1, batch_size=2) == first
    with pytest.raises(ValueError, match="2 seeds for 3 inputs"):
        generator.generate_tokens(TEXTS[:3], hot, seed=[(1, 0), (1, 1)])
    narrow = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=0.7, top_k=1, top_p=0.9)
    assert generator.generate_tokens(TEXTS, narrow, seed=3) == generator.generate_tokens(
        TEXTS, GenerationConfig(max_new_tokens=8))


def test_sampling_warpers_and_repetition_penalty_match_transformers():
    import torch
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    rng = np.random.default_rng(0)
    scores = rng.normal(0, 3, size=(4, 50)).astype(np.float32)
    for temperature, top_k, top_p in [(0.7, 5, 1.0), (1.0, 0, 0.6), (1.3, 20, 0.9)]:
        expected = torch.from_numpy(scores.copy())
        if temperature != 1.0:
            expected = TemperatureLogitsWarper(temperature)(None, expected)
        if top_k:
            expected = TopKLogitsWarper(top_k)(None, expected)
        if top_p < 1.0:
            expected = TopPLogitsWarper(top_p)(None, expected)
        ours = warp(scores, temperature, top_k, top_p)
        assert (np.isinf(ours) == torch.isinf(expected).numpy()).all()
        kept = ~np.isinf(ours)
        assert np.allclose(ours[kept], expected.numpy()[kept], atol=1e-6)
    history = rng.integers(0, 50, size=(4, 9))
    ignore = np.array([0, 2, 0, 4])  # left padding of each row, not penalized
    expected = RepetitionPenaltyLogitsProcessor(1.4, prompt_ignore_length=torch.from_numpy(ignore))(
        torch.from_numpy(history), torch.from_numpy(scores.copy()))
    assert np.array_equal(penalize_repetition(scores, history, ignore, 1.4), expected.numpy())


def test_stop_sequences_cut_the_output(exported, model_dirs):
    generator = OnnxGenerator(exported("llama")[0].output_dir)
    full = generator.generate(TEXTS, GREEDY)
    words = full[0].split()
    stop = words[len(words) // 2]
    settings = GenerationConfig(max_new_tokens=6, stop_sequences=[stop, "###"])
    cut = generator.generate(TEXTS, settings)
    assert cut[0] == full[0][: full[0].find(stop)].strip() and len(cut[0]) < len(full[0])
    assert cut == torch_generate(model_dirs["llama"], "causal_lm", TEXTS, settings, MAX_LENGTH, device="cpu")
    assert cut_at_stop("red item. and more", [".", "and"]) == "red item"  # the earliest stop wins
    assert cut_at_stop("no stop here", [".", "and"]) == "no stop here"


@pytest.mark.parametrize("name", ["t5", "gpt2"])
def test_each_step_after_the_first_feeds_one_token_on_a_growing_past(name, exported):
    generator = OnnxGenerator(exported(name)[0].output_dir)
    real, calls = generator.sessions["decoder"], []

    class Recording:
        """Records what the real session is fed, then runs it."""

        def run(self, names, feeds):
            past = "past_key_values.0.decoder.key" if TASKS[name] == "seq2seq" else "past_key_values.0.key"
            calls.append((feeds["input_ids"].shape[1], feeds[past].shape[2]))
            return real.run(names, feeds)

    generator.sessions["decoder"] = Recording()
    settings = GenerationConfig(max_new_tokens=5)
    generator.generate(TEXTS[:3], settings, batch_size=3)
    prompt = generator.encode(TEXTS[:3])["input_ids"].shape[1]
    first = 1 if TASKS[name] == "seq2seq" else prompt  # seq2seq starts from the decoder start token
    assert calls[0] == (first, 0)
    assert calls[1:] == [(1, first + i) for i in range(len(calls) - 1)] and len(calls) == 5


def test_runtime_encodes_and_decodes_like_transformers(exported, model_dirs, tmp_path):
    from transformers import AutoTokenizer

    for name in ("t5", "gpt2"):
        generator = OnnxGenerator(exported(name)[0].output_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dirs[name])
        tokenizer.padding_side = "left" if TASKS[name] == "causal_lm" else "right"
        long_texts = TEXTS + [" ".join(["word"] * 200)]  # truncated at MAX_LENGTH
        expected = tokenizer(long_texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="np")
        ours = generator.encode(long_texts)
        assert ours["input_ids"].shape[1] == MAX_LENGTH
        for key in ("input_ids", "attention_mask"):
            assert np.array_equal(ours[key], expected[key]), (name, key)
    # transformers' clean-up of spaces, when the tokenizer config asks for it
    folder = tmp_path / "cleanup"
    shutil.copytree(model_dirs["gpt2"], folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps(config | {"clean_up_tokenization_spaces": True}))
    export = export_causal_lm(folder, tmp_path / "onnx", 17, MAX_LENGTH)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = tokenizer(["issue : x , y . don ' t , it ' s [SEP] done", "plain words"])["input_ids"]
    expected = tokenizer.batch_decode(rows, skip_special_tokens=True)
    assert OnnxGenerator(export.output_dir).decode(rows) == expected
    without_cleanup = AutoTokenizer.from_pretrained(model_dirs["gpt2"]).batch_decode(rows, skip_special_tokens=True)
    assert expected[0] != without_cleanup[0]  # the flag mattered for this text


def largest_float_initializer_perturbed(source: Path, target: Path) -> None:
    """Copy a graph with noise on its largest float weight (the embeddings): it runs, its outputs drift.

    Noise, not a constant shift: LayerNorm removes a constant added to every embedding exactly.
    """
    model = onnx.load(str(source))
    weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    weight = max(weights, key=lambda t: np.prod(t.dims))
    values = numpy_helper.to_array(weight)
    noise = np.random.default_rng(0).normal(0, 0.05, values.shape).astype(values.dtype)
    weight.CopyFrom(numpy_helper.from_array(values + noise, weight.name))
    onnx.save(model, str(target))


@pytest.mark.parametrize("name, graph, output", [("t5", ENCODER_FILE, "last_hidden_state"),
                                                 ("t5", CROSS_KV_FILE, "present.0.encoder.key"),
                                                 ("bert2bert", DECODER_FILE, "logits"),
                                                 ("gpt2", DECODER_FILE, "logits")])
def test_a_corrupted_graph_fails_parity_naming_it(name, graph, output, exported, model_dirs, tmp_path):
    export, _ = exported(name)
    copy = tmp_path / "broken"
    shutil.copytree(export.output_dir, copy)
    largest_float_initializer_perturbed(export.output_dir / graph, copy / graph)
    broken = dataclasses.replace(export, output_dir=copy, files={k: copy / p.name for k, p in export.files.items()})
    with pytest.raises(ExportParityError, match=re.escape(f"{graph} output '{output}' differs from PyTorch by up to")):
        check_generative_parity(model_dirs[name], TASKS[name], broken, TEXTS, MAX_LENGTH, atol=1e-4)


def test_an_export_of_another_model_fails_parity(exported, model_dirs):
    with pytest.raises(ExportParityError, match=rf"{DECODER_FILE} output 'logits'"):
        check_generative_parity(model_dirs["llama"], "causal_lm", exported("gpt2")[0], TEXTS, MAX_LENGTH, atol=1e-4)


@pytest.mark.parametrize("architecture, method, task", [("t5", "prompt_tuning", "seq2seq"),
                                                        ("llama", "prefix_tuning", "causal_lm"),
                                                        ("gpt2", "prompt_tuning", "causal_lm")])
def test_prompt_adapters_export_and_generate_like_pytorch(architecture, method, task, tiny_model, pair_splits,
                                                          tmp_path):
    from tuneline.training.engine import fine_tune

    config = TrainConfig(base_model=str(tiny_model(architecture)), method=method, max_steps=2, batch_size=4,
                         eval_batch_size=8, device="cpu", learning_rate=1e-3)
    model_dir = fine_tune(pair_splits, config, tmp_path, task=task).model_dir
    export, parity = export_generative(model_dir, tmp_path / "onnx", task, 17, MAX_LENGTH, TEXTS, 1e-4)
    assert parity.max_abs_diff <= 1e-4
    runtime = json.loads(export.files["runtime"].read_text())
    assert runtime["adapter"] == method.upper() and ("prefix" in export.files) == (task == "causal_lm")
    ours = OnnxGenerator(export.output_dir).generate(TEXTS, GREEDY, batch_size=len(TEXTS))
    assert ours == torch_generate(model_dir, task, TEXTS, GREEDY, MAX_LENGTH, batch_size=len(TEXTS), device="cpu")


def test_unsupported_requests_are_refused_clearly(exported, tiny_model, pair_splits, tmp_path):
    with pytest.raises(ValueError, match="beam search is PyTorch-only"):
        OnnxGenerator(exported("gpt2")[0].output_dir).generate(TEXTS, GenerationConfig(num_beams=2))
    with pytest.raises(ConfigError, match="not task 'classification'"):
        export_generative(tiny_model("gpt2"), tmp_path / "x", "classification", 17, MAX_LENGTH, TEXTS, 1e-4)
    with pytest.raises(FileNotFoundError, match="not a generative ONNX export"):
        OnnxGenerator(tmp_path)
    from tuneline.training.engine import fine_tune

    config = TrainConfig(base_model=str(tiny_model("t5")), method="prefix_tuning", max_steps=1, batch_size=4,
                         eval_batch_size=8, device="cpu")
    model_dir = fine_tune(pair_splits, config, tmp_path / "prefix", task="seq2seq").model_dir
    with pytest.raises(ConfigError, match="seq2seq model with a PREFIX_TUNING adapter cannot be exported"):
        export_generative(model_dir, tmp_path / "onnx", "seq2seq", 17, MAX_LENGTH, TEXTS, 1e-4)
    assert not (tmp_path / "onnx").exists()  # refused before writing anything


def test_the_runtime_imports_neither_torch_nor_transformers():
    code = ("import sys, tuneline.runtime.generator; "
            "loaded = {m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'prefect', 'pydantic'}; "
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_dynamic_int8_quantizes_every_graph_and_is_measured_beside_fp32(model_dirs, tmp_path, name):
    from tuneline.config import ExportConfig
    from tuneline.export.generative import export_generative_and_quantize
    from tuneline.export.quantization import count_ops
    from tuneline.export.variants import compare_generative_variants

    task = TASKS[name]
    result = export_generative_and_quantize(model_dirs[name], tmp_path, ExportConfig(parity_rows=4), MAX_LENGTH,
                                            TEXTS, task)
    assert result.int8_path.name == "generator.int8" and result.int8_onnx_path == result.int8_path
    for graph in result.onnx_path.glob("*.onnx"):
        int8 = result.int8_path / graph.name
        assert count_ops(int8).get("MatMulInteger", 0) > 0, graph.name
        assert int8.stat().st_size < graph.stat().st_size
    assert (result.int8_path / RUNTIME_FILE).is_file()  # the runtime files travel with the INT8 graphs
    references = [cut_at_stop(text, []) for text in torch_generate(model_dirs[name], task, TEXTS, GREEDY, MAX_LENGTH)]
    variants = compare_generative_variants(task, model_dirs[name], result.onnx_path, result.int8_path, TEXTS,
                                           references, GREEDY, MAX_LENGTH, batch_size=4)
    assert [v.name for v in variants] == ["PyTorch FP32", "ONNX FP32", "ONNX INT8 (dynamic)"]
    # the references are PyTorch's own greedy outputs, which the FP32 runtime reproduces token for token
    assert variants[1].metrics == variants[0].metrics
    assert variants[0].metrics["bleu"] == pytest.approx(100)
    assert variants[2].bytes < variants[1].bytes and all(v.rows_per_second > 0 for v in variants)


def test_keep_fp32_patterns_apply_across_the_generator_graphs(model_dirs, tmp_path):
    from tuneline.config import ExportConfig
    from tuneline.export.generative import export_generative_and_quantize

    with pytest.raises(ConfigError, match="'/nowhere/\\*' matches no quantizable node"):
        export_generative_and_quantize(model_dirs["gpt2"], tmp_path, ExportConfig(keep_fp32=["/nowhere/*"]),
                                       MAX_LENGTH, TEXTS[:2], "causal_lm")
