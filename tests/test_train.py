"""ssd_math.train: schedule, masking, exact accumulation, checkpoints, guards, kill-and-resume."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssd_math import train as T
from ssd_math import train_data, train_model, train_parallel, train_state

# ------------------------------------------------------------------------------------------
# a tiny model + character tokenizer, built here (no downloads)
# ------------------------------------------------------------------------------------------

CHARS = [chr(i) for i in range(32, 127)] + ["\n"]


def make_tokenizer():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for c in CHARS:
        vocab[c] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def tiny_config(hidden: int = 64, layers: int = 2, vocab: int = 100, tie: bool = False):
    from transformers import Qwen3_5TextConfig

    return Qwen3_5TextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        layer_types=["full_attention"] * layers,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )


def hybrid_config(hidden: int = 32, vocab: int = 100):
    """Qwen3.5's real layer mix, tiny: 3 linear-attention (Gated DeltaNet) + 1 full-attention."""
    from transformers import Qwen3_5TextConfig

    return Qwen3_5TextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        layer_types=["linear_attention"] * 3 + ["full_attention"],
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
        linear_conv_kernel_dim=4,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )


def make_model_dir(path: Path, seed: int = 0, weights: bool = True, hybrid: bool = False, **cfg) -> Path:
    """config.json + tokenizer (+ random weights) in ``path``: an init_dir for train()."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = hybrid_config(**cfg) if hybrid else tiny_config(**cfg)
    if weights:
        AutoModelForCausalLM.from_config(config).save_pretrained(path)
    else:
        path.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


def make_rows(n: int, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        rows.append(
            {"prompt": f"Q: {a}+{b}=?\nA: ", "completion": f"{a + b}", "finish_reason": "stop" if i % 5 else "length"}
        )
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("init") / "m")


def base_spec(init_dir, tmp: Path, **over) -> dict:
    spec = {
        "init_dir": str(init_dir),
        "data": str(write_rows(tmp / "d.jsonl", make_rows(32))),
        "out_dir": str(tmp / "out"),
        "log": str(tmp / "log.jsonl"),
        "seed": 1,
        "max_len": 64,
        "global_batch": 8,
        "micro_batch": 4,
        "lr": 1e-3,
        "min_lr": 1e-4,
        "warmup_steps": 1,
        "progress": False,
    }
    spec.update(over)
    return spec


def load_weights(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def read_log(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


# ------------------------------------------------------------------------------------------
# pure pieces
# ------------------------------------------------------------------------------------------


def test_lr_schedule_warmup_peak_cosine_end():
    s = T.resolve_spec({"init_dir": "x", "data": "x", "out_dir": "x", "lr": 5e-6, "min_lr": 1e-6, "warmup_steps": 5})
    total = 94
    assert T.lr_at(1, s, total) == pytest.approx(1e-6)
    assert T.lr_at(3, s, total) == pytest.approx(3e-6)
    assert T.lr_at(5, s, total) == pytest.approx(5e-6)  # peak at the end of warmup
    assert T.lr_at(total, s, total) == pytest.approx(1e-6)  # min_lr at the last step
    mid = 5 + (total - 5) / 2
    assert T.lr_at(int(mid), s, total) == pytest.approx(3e-6, rel=0.03)
    lrs = [T.lr_at(k, s, total) for k in range(5, total + 1)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    c = {**s, "schedule": "constant"}
    assert T.lr_at(50, c, total) == T.lr_at(total, c, total) == pytest.approx(5e-6)


def test_group_by_length_order_is_seeded_and_cuts_padding():
    """group_by_length: every epoch is a seeded order of whole batches of similar length (each
    row at most once), batches in random order (no long-to-short curriculum), far less padding
    than the plain permutation."""
    import random as _r

    rng = _r.Random(0)
    lengths = [rng.randint(20, 250) for _ in range(3000)]
    s = {"seed": 7, "global_batch": 16, "group_by_length": True}
    spe = len(lengths) // 16
    steps = [train_data.global_batch_rows(k, len(lengths), s, spe, lengths) for k in range(spe)]
    flat = [i for b in steps for i in b]
    assert all(len(b) == 16 for b in steps) and len(set(flat)) == len(flat) == spe * 16
    assert steps == [train_data.global_batch_rows(k, len(lengths), s, spe, lengths) for k in range(spe)]
    assert steps != [train_data.global_batch_rows(k, len(lengths), {**s, "seed": 8}, spe, lengths) for k in range(spe)]
    assert train_data.global_batch_rows(spe, len(lengths), s, spe, lengths) != steps[0]  # epoch 2 differs

    def pad_share(batches):
        return sum(16 * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches) / sum(
            16 * max(lengths[i] for i in b) for b in batches
        )

    plain = [train_data.global_batch_rows(k, len(lengths), {**s, "group_by_length": False}, spe) for k in range(spe)]
    assert pad_share(steps) < 0.1 < 0.4 < pad_share(plain)
    # batch order is shuffled: consecutive batches are not long-to-short (a sorted mega-batch
    # of 50 batches would give ~100% descending neighbours, a random order ~50%)
    maxes = [max(lengths[i] for i in b) for b in steps]
    desc = sum(x > y for x, y in zip(maxes, maxes[1:])) / (len(maxes) - 1)
    assert 0.35 < desc < 0.65, desc


def test_completion_only_masking_and_eos():
    tok = make_tokenizer()
    ids, labels = train_data.encode_row({"prompt": "Q: 1+1\nA: ", "completion": "2", "finish_reason": "stop"}, tok, 100)
    n_p = len(tok("Q: 1+1\nA: ", add_special_tokens=False)["input_ids"])
    assert labels[:n_p] == [-100] * n_p
    assert labels[n_p:] == ids[n_p:] == [tok.convert_tokens_to_ids("2"), tok.eos_token_id]
    _, lab2 = train_data.encode_row({"prompt": "Q", "completion": "22", "finish_reason": "length"}, tok, 100)
    assert tok.eos_token_id not in lab2  # a length-stopped completion gets no eos
    ids3, lab3 = train_data.encode_row({"prompt": "Q", "completion": "2222"}, tok, 3)
    assert len(ids3) == len(lab3) == 3
    batch = train_data.collate([(ids, labels), (ids3, lab3)], pad_id=0)
    assert (batch["labels"][1, 3:] == -100).all() and (batch["attention_mask"][1, 3:] == 0).all()


def test_batch_layout_fails_fast():
    assert train_parallel.batch_layout(32, 4, 1) == 8
    assert train_parallel.batch_layout(32, 4, 2) == 4
    with pytest.raises(ValueError, match="divisible"):
        train_parallel.batch_layout(30, 4, 1)


def test_accumulation_4x2_equals_one_batch_of_8(init_dir):
    from transformers import AutoModelForCausalLM

    tok = make_tokenizer()
    ex = [train_data.encode_row(r, tok, 64) for r in make_rows(8, seed=3)]
    n_global = sum(train_data.n_loss_tokens(y) for _, y in ex)
    model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)
    model.zero_grad()
    (train_model.token_sum_loss(model, train_data.collate(ex, 0)) / n_global).backward()
    g_full = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for k in range(4):
        (train_model.token_sum_loss(model, train_data.collate(ex[2 * k : 2 * k + 2], 0)) / n_global).backward()
    for a, p in zip(g_full, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("chunk", [7, 64])
def test_chunked_loss_equals_full_loss_and_gradients(init_dir, chunk):
    """The memory-lean loss (lm_head + CE per chunk, checkpointed) is the same function."""
    from transformers import AutoModelForCausalLM

    tok = make_tokenizer()
    ex = [train_data.encode_row(r, tok, 64) for r in make_rows(4, seed=5)]
    batch = train_data.collate(ex, 0)
    model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)
    model.zero_grad()
    full = train_model.token_sum_loss(model, batch)
    full.backward()
    g_full = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    chunked = train_model.token_sum_loss(model, batch, chunk_tokens=chunk)
    chunked.backward()
    assert torch.allclose(full, chunked, rtol=1e-5)
    for a, p in zip(g_full, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6, rtol=1e-4)
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)  # restored


# ------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------


def test_train_checkpoints_log_and_summary(init_dir, tmp_path):
    ck = {2: str(tmp_path / "ck2"), 4: str(tmp_path / "ck4")}
    spec = base_spec(init_dir, tmp_path, checkpoints=ck, instrument={"enabled": True})
    out = T.train(spec)
    assert out["steps"] == 4 and out["accumulation"] == 2
    for folder in ck.values():
        assert (Path(folder) / "model.safetensors").exists()
        assert (Path(folder) / "tokenizer.json").exists()
    assert (Path(spec["out_dir"]) / "config.json").exists()
    rows = read_log(spec["log"])
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in (
        "loss",
        "ppl",
        "lr",
        "grad_norm",
        "tokens",
        "elapsed_s",
        "tokens_per_s",
        "frac_changed",
        "frac_changed_attention",
        "dw_hist",
        "G2_raw",
        "trS_raw",
        "G2_ema",
        "trS_ema",
        "B_simple",
        "gB_norm",
    ):
        assert key in rows[-1], key
    assert rows[0]["ppl"] == pytest.approx(math.exp(rows[0]["loss"]))
    assert rows[0]["lr"] == pytest.approx(1e-3) and rows[-1]["lr"] == pytest.approx(1e-4)
    assert torch.equal(load_weights(ck[4])["model.norm.weight"], load_weights(spec["out_dir"])["model.norm.weight"])


def test_too_few_steps_for_checkpoint_fails_before_training(init_dir, tmp_path):
    spec = base_spec(init_dir, tmp_path, checkpoints={11: str(tmp_path / "ck11")})
    with pytest.raises(ValueError) as err:
        T.train(spec)
    msg = str(err.value)
    assert "11" in msg and "only 4 optimizer steps" in msg and "sft.checkpoint_steps" in msg
    assert not Path(spec["log"]).exists() and not Path(spec["out_dir"]).exists()


def test_checkpoints_past_end_opt_in_saves_final_weights(init_dir, tmp_path):
    ck = {2: str(tmp_path / "ck2"), 99: str(tmp_path / "ck99")}
    spec = base_spec(init_dir, tmp_path, checkpoints=ck, checkpoints_past_end="final")
    out = T.train(spec)
    meta = json.loads((tmp_path / "ck99" / "meta.json").read_text())
    assert meta["requested_step"] == 99 and meta["step"] == out["steps"]
    final, late = load_weights(spec["out_dir"]), load_weights(tmp_path / "ck99")
    assert all(torch.equal(final[k], late[k]) for k in final)


def test_nan_guard_names_the_step(init_dir, tmp_path):
    # lr 1e30: step 1 blows the weights up, step 2 sees a non-finite loss
    spec = base_spec(
        init_dir, tmp_path, lr=1e30, min_lr=1e30, warmup_steps=0, grad_clip=None, checkpoints={1: str(tmp_path / "ck1")}
    )
    with pytest.raises(FloatingPointError, match="step 2"):
        T.train(spec)
    assert torch.isfinite(load_weights(tmp_path / "ck1")["model.norm.weight"]).all()
    assert not Path(spec["out_dir"]).exists()


def test_bf16_optimizer_state_is_bf16_representable(init_dir, tmp_path):
    spec = base_spec(init_dir, tmp_path, optimizer_state="bf16", max_steps=2)
    T.train(spec)
    w = load_weights(spec["out_dir"])
    for v in w.values():
        assert torch.equal(v, v.to(torch.bfloat16).float())


def _run_cli(spec_path: Path, env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ssd_math.train", "--spec", str(spec_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow  # three training processes
def test_sigkill_and_resume_equals_uninterrupted(init_dir, tmp_path):
    rows = make_rows(48, seed=5)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def spec_for(name, **over):
        d = tmp_path / name
        d.mkdir()
        spec = base_spec(
            init_dir,
            d,
            data=str(write_rows(d / "rows48.jsonl", rows)),
            global_batch=4,
            micro_batch=2,
            instrument={"enabled": True},
            checkpoints={2: str(d / "ck2"), 6: str(d / "ck6")},
            resume_dir=str(d / "resume"),
            **over,
        )
        p = d / "spec.json"
        p.write_text(json.dumps(spec))
        return spec, p

    ref, ref_path = spec_for("ref")
    proc = _run_cli(ref_path, env)
    kill, kill_path = spec_for("kill")
    victim = _run_cli(kill_path, env)
    deadline = time.time() + 120
    while not (Path(kill["resume_dir"]) / "progress.json").exists():
        assert victim.poll() is None, victim.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not Path(kill["out_dir"]).exists(), "killed too late: the run had finished"
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    for ck in kill["checkpoints"].values():  # Snakemake deletes a rerun job's declared outputs
        shutil.rmtree(ck, ignore_errors=True)
    again = _run_cli(kill_path, env)
    assert again.wait(timeout=300) == 0, again.stderr.read().decode()[-2000:]
    summary = json.loads(again.stdout.read().decode().strip().splitlines()[-1])
    assert summary["resumed_from"] >= 2 and summary["steps"] == 12

    a, b = load_weights(ref["out_dir"]), load_weights(kill["out_dir"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for step, ck in kill["checkpoints"].items():  # put back from the resume state, the same weights
        ca, cb = load_weights(ref["checkpoints"][step]), load_weights(ck)
        assert all(torch.equal(ca[k], cb[k]) for k in ca), step
    log_a, log_b = read_log(ref["log"]), read_log(kill["log"])
    assert [r["step"] for r in log_b] == list(range(1, 13))
    for ra, rb in zip(log_a, log_b):
        assert ra["loss"] == rb["loss"] and ra["grad_norm"] == rb["grad_norm"]
        assert ra["G2_ema"] == rb["G2_ema"] and ra["frac_changed"] == rb["frac_changed"]


@pytest.mark.slow  # three training runs
def test_finished_run_drops_its_resume_state_and_a_forced_rerun_rewrites_checkpoints(init_dir, tmp_path, monkeypatch):
    """`snakemake -R sft` deletes the checkpoint folders and reruns: a resume state left at the
    last checkpoint must not be resumed (it would write only the final model and a log of the last
    steps). A finished run removes its state; a leftover one (a job killed after its final save)
    whose checkpoints are gone starts over and ends where an uninterrupted run does."""
    rows = make_rows(48, seed=5)
    spec = base_spec(
        init_dir,
        tmp_path,
        data=str(write_rows(tmp_path / "rows48.jsonl", rows)),
        global_batch=4,
        micro_batch=2,
        checkpoints={2: str(tmp_path / "ck2"), 6: str(tmp_path / "ck6")},
        resume_dir=str(tmp_path / "resume"),
    )
    T.train(dict(spec))
    assert not Path(spec["resume_dir"]).exists()
    ref = load_weights(spec["out_dir"])
    with monkeypatch.context() as m:  # the leftover of a run killed between its final save and the cleanup
        m.setattr(T, "drop_resume_state", lambda rdir: None)  # the name train() calls (imported by name)
        T.train(dict(spec))
    assert (Path(spec["resume_dir"]) / "progress.json").exists()
    for d in ("ck2", "ck6", "out"):
        shutil.rmtree(tmp_path / d, ignore_errors=True)
    shutil.rmtree(spec["out_dir"], ignore_errors=True)
    summary = T.train(dict(spec))
    assert summary["resumed_from"] == 0
    assert (tmp_path / "ck2").is_dir() and (tmp_path / "ck6").is_dir()
    assert [r["step"] for r in read_log(spec["log"])] == list(range(1, 13))
    again = load_weights(spec["out_dir"])
    assert all(torch.equal(ref[k], again[k]) for k in ref)


@pytest.mark.slow  # two training processes (accelerate launch and the direct start)
def test_direct_cpu_start_is_what_accelerate_launch_gives(init_dir, tmp_path):
    """launcher.train_launcher starts a one-process CPU run without `accelerate launch`: the
    environment it sets is the launcher's own (accelerate's prepare_simple_launcher_cmd_env on
    envs/accelerate/cpu.yaml; any other ACCELERATE_* variable it sets is one at its default),
    and both starts train the same weights, bit for bit. A GPU or FSDP config keeps the launcher."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    from ssd_math import launcher as L

    root = Path(__file__).resolve().parents[1]
    cpu = root / "envs/accelerate/cpu.yaml"
    args = launch_command_parser().parse_args(["--config_file", str(cpu), "-m", "ssd_math.train"])
    args, _, _ = _validate_launch_command(args)
    _, env = prepare_simple_launcher_cmd_env(args)
    acc = {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}
    assert {k: acc[k] for k in L.SIMPLE_CPU_ENV} == L.SIMPLE_CPU_ENV
    assert acc.get("ACCELERATE_DYNAMO_BACKEND") == "NO"
    assert set(acc) - set(L.SIMPLE_CPU_ENV) <= {
        "ACCELERATE_DYNAMO_BACKEND",
        "ACCELERATE_DYNAMO_MODE",
        "ACCELERATE_DYNAMO_USE_FULLGRAPH",
        "ACCELERATE_DYNAMO_USE_DYNAMIC",
        "ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION",
    }, sorted(acc)
    for name in ("gpu1.yaml", "fsdp.yaml"):
        assert L.train_launcher(root / "envs/accelerate" / name).startswith(
            "python -m ssd_math.launcher on-gpu accelerate launch --config_file "
        )

    direct = L.train_launcher(cpu, python=sys.executable)
    assert not direct.startswith("accelerate")
    outs = {}
    for name, launcher in (
        ("direct", direct),
        ("launched", f"{sys.executable} -m accelerate.commands.launch --config_file {cpu} -m ssd_math.train"),
    ):
        d = tmp_path / name
        d.mkdir()
        spec = base_spec(init_dir, d)
        (d / "spec.json").write_text(json.dumps(spec))
        res = subprocess.run(
            f"{launcher} --spec {d / 'spec.json'}",
            shell=True,
            capture_output=True,
            env={**os.environ, "OMP_NUM_THREADS": "2"},
            timeout=300,
        )
        assert res.returncode == 0, res.stderr.decode()[-3000:]
        outs[name] = load_weights(spec["out_dir"])
    assert all(torch.equal(outs["direct"][k], outs["launched"][k]) for k in outs["direct"])


@pytest.mark.slow
def test_two_cpu_processes_match_one(init_dir, tmp_path):
    """The multi-process path (gloo on CPU): DDP all-reduce, and with instrumentation the
    no_sync + explicit all-reduce, both give the single-process weights."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    outs = {}
    for name, procs, inst in (("one", 1, True), ("two", 2, True), ("two_plain", 2, False)):
        d = tmp_path / name
        d.mkdir()
        spec = base_spec(init_dir, d, micro_batch=4 // procs, grad_clip=None, instrument={"enabled": inst})
        (d / "spec.json").write_text(json.dumps(spec))
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(procs),
            "--master_port",
            str(29500 + os.getpid() % 1000),
            "-m",
            "ssd_math.train",
            "--spec",
            str(d / "spec.json"),
        ]
        res = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
        assert res.returncode == 0, res.stderr.decode()[-3000:]
        outs[name] = load_weights(spec["out_dir"])
        assert json.loads(res.stdout.decode().splitlines()[-1])["processes"] == procs
    for k in outs["one"]:
        assert torch.allclose(outs["one"][k], outs["two"][k], atol=1e-6), k
        assert torch.equal(outs["two"][k], outs["two_plain"][k]), k


def test_gradient_checkpointing_and_inline_spec_cli(init_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    T.train(base_spec(init_dir, a, max_steps=2))
    T.main(["--spec-json", json.dumps(base_spec(init_dir, b, max_steps=2, gradient_checkpointing=True))])
    wa, wb = load_weights(a / "out"), load_weights(b / "out")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k


def test_hybrid_qwen35_trains_with_gradient_checkpointing(tmp_path):
    """transformers 5.20.2's Qwen3.5 with its real layer mix (Gated DeltaNet + full attention,
    tied embeddings): train() with gradient checkpointing on and the chunked loss changes every
    trainable weight, and the decoder layers really are recomputed in backward."""
    from transformers.models.qwen3_5 import modeling_qwen3_5 as Q

    init = make_model_dir(tmp_path / "hybrid", hybrid=True)
    calls = []
    orig = Q.Qwen3_5DecoderLayer.forward

    def counting(self, *a, **kw):
        calls.append((self.block_type, torch.is_grad_enabled()))
        return orig(self, *a, **kw)

    Q.Qwen3_5DecoderLayer.forward = counting
    try:
        spec = base_spec(
            init,
            tmp_path,
            max_steps=1,
            global_batch=4,
            micro_batch=4,
            max_len=24,
            gradient_checkpointing=True,
            loss_chunk_tokens=16,
        )
        T.train(spec)
    finally:
        Q.Qwen3_5DecoderLayer.forward = orig
    # 4 layers forward + 4 recomputed in backward (one micro-batch)
    assert len(calls) == 8 and {b for b, _ in calls} == {"linear_attention", "full_attention"}
    w0, w1 = load_weights(init), load_weights(spec["out_dir"])
    assert w0.keys() == w1.keys()
    assert all(not torch.equal(w0[k], w1[k]) for k in w0), [k for k in w0 if torch.equal(w0[k], w1[k])]


@pytest.mark.slow  # trains a hybrid model three ways
def test_checkpoint_sublayers_same_loss_gradients_and_weights(tmp_path):
    """sft.checkpoint_sublayers (each part of a decoder layer under its own checkpoint, nested in
    the layer's) recomputes, it does not approximate: on the hybrid Qwen3.5 mix the loss and every
    gradient equal plain per-layer checkpointing bit for bit, and so do the weights train() ends
    with. The parts really run under their own checkpoints: the token mixers forward three times
    (forward, the layer's recompute, their own recompute), the MLPs twice (the layer's recompute
    stops early, once the MLP's input exists)."""
    from transformers import AutoModelForCausalLM
    from transformers.models.qwen3_5 import modeling_qwen3_5 as Q

    init = make_model_dir(tmp_path / "hybrid", hybrid=True)
    tok = make_tokenizer()
    batch = train_data.collate([train_data.encode_row(r, tok, 40) for r in make_rows(4, seed=7)], 0)
    calls: dict = {}
    origs = {c: c.forward for c in (Q.Qwen3_5GatedDeltaNet, Q.Qwen3_5Attention, Q.Qwen3_5MLP)}

    def counting(cls):
        def fwd(self, *a, **kw):
            calls[cls.__name__] = calls.get(cls.__name__, 0) + 1
            return origs[cls](self, *a, **kw)

        return fwd

    results = {}
    try:
        for c in origs:
            c.forward = counting(c)
        for nested in (False, True):
            model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32).train()
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if nested:
                assert train_model.checkpoint_sublayers(model) == 4 * 4  # 2 norms, mixer, MLP per layer
            calls.clear()
            loss = train_model.token_sum_loss(model, batch, chunk_tokens=16)
            loss.backward()
            results[nested] = (
                loss.detach(),
                {n: p.grad for n, p in model.named_parameters()},
                dict(calls),
                set(model.state_dict()),
            )
    finally:
        for c, f in origs.items():
            c.forward = f
    (l0, g0, c0, k0), (l1, g1, c1, k1) = results[False], results[True]
    assert torch.equal(l0, l1) and k0 == k1
    assert g0.keys() == g1.keys() and all(torch.equal(g0[n], g1[n]) for n in g0), [
        n for n in g0 if not torch.equal(g0[n], g1[n])
    ]
    assert c0 == {"Qwen3_5GatedDeltaNet": 3 * 2, "Qwen3_5Attention": 1 * 2, "Qwen3_5MLP": 4 * 2}
    assert c1 == {"Qwen3_5GatedDeltaNet": 3 * 3, "Qwen3_5Attention": 1 * 3, "Qwen3_5MLP": 4 * 2}

    outs = {}
    for nested in (False, True):
        d = tmp_path / f"run{int(nested)}"
        d.mkdir()
        T.train(
            base_spec(
                init,
                d,
                max_steps=2,
                global_batch=4,
                micro_batch=2,
                max_len=24,
                gradient_checkpointing=True,
                checkpoint_sublayers=nested,
                loss_chunk_tokens=16,
            )
        )
        outs[nested] = load_weights(d / "out")
    assert all(torch.equal(outs[False][k], outs[True][k]) for k in outs[False])
    with pytest.raises(ValueError, match="checkpoint_sublayers needs gradient_checkpointing"):
        T.resolve_spec(base_spec(init, tmp_path, checkpoint_sublayers=True))


def test_linear_attention_kernels_on_cuda(monkeypatch, capsys):
    """On CUDA a model with Gated DeltaNet layers and no flash-linear-attention fails fast, naming
    the install command (instead of transformers' silent reference kernels); without causal-conv1d
    it only warns (optional: transformers' F.conv1d fallback). Full attention only, or CPU, passes."""
    from transformers import Qwen3_5Config
    from transformers.utils import import_utils as iu

    hybrid, full = hybrid_config(), tiny_config()
    assert train_model.check_linear_attention_kernels(hybrid, "cpu") == []
    assert train_model.check_linear_attention_kernels(full, "cuda") == []
    monkeypatch.setattr(iu, "is_flash_linear_attention_available", lambda: False)
    monkeypatch.setattr(iu, "is_causal_conv1d_available", lambda: True)
    with pytest.raises(
        RuntimeError,
        match="3 linear-attention.*flash-linear-attention.*pip install --no-deps flash-linear-attention==0.6.0",
    ):
        train_model.check_linear_attention_kernels(hybrid, "cuda")
    # a multimodal Qwen3.5 config (the hub checkpoint's) is checked through its text config
    with pytest.raises(RuntimeError, match="flash-linear-attention"):
        train_model.check_linear_attention_kernels(Qwen3_5Config(text_config=hybrid.to_dict()), "cuda")
    monkeypatch.setattr(iu, "is_flash_linear_attention_available", lambda: True)
    monkeypatch.setattr(iu, "is_causal_conv1d_available", lambda: False)
    warned = train_model.check_linear_attention_kernels(hybrid, "cuda")
    assert len(warned) == 1 and "causal-conv1d is not installed" in warned[0]
    assert "causal-conv1d is not installed" in capsys.readouterr().err
    monkeypatch.setattr(iu, "is_causal_conv1d_available", lambda: True)
    assert train_model.check_linear_attention_kernels(hybrid, "cuda") == []


def test_chunked_output_layer_runs_under_autocast(init_dir, tmp_path, monkeypatch):
    """With mixed_precision bf16 the chunked loss head's matmul runs in bf16 (under the
    accelerator's autocast, as the model body does), in forward and in its recompute."""
    seen = []
    orig = train_model._chunk_ce

    def spy(h, t, w, b):
        seen.append(
            (
                torch.is_autocast_enabled("cpu"),
                torch.get_autocast_dtype("cpu"),
                torch.nn.functional.linear(h, w, b).dtype,
            )
        )
        cache.append(torch.is_autocast_cache_enabled())
        return orig(h, t, w, b)

    # the residual stream (every decoder layer's input, hence its checkpointed input) is bf16,
    # and autocast keeps no cache of bf16 weight copies across the forward
    cache, layer_in = [], []
    from transformers.models.qwen3_5 import modeling_qwen3_5 as Q

    orig_layer = Q.Qwen3_5DecoderLayer.forward

    def layer_spy(self, hidden_states, *a, **kw):
        layer_in.append(hidden_states.dtype)
        return orig_layer(self, hidden_states, *a, **kw)

    monkeypatch.setattr(Q.Qwen3_5DecoderLayer, "forward", layer_spy)

    from accelerate.state import AcceleratorState

    monkeypatch.setattr(train_model, "_chunk_ce", spy)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    spec = base_spec(init_dir, tmp_path, max_steps=1, global_batch=4, micro_batch=4, loss_chunk_tokens=32)
    AcceleratorState._reset_state(reset_partial_state=True)  # a process-wide singleton
    try:
        T.train(spec)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert seen and all(s == (True, torch.bfloat16, torch.bfloat16) for s in seen), seen
    assert cache and not any(cache), cache
    assert layer_in and set(layer_in) == {torch.bfloat16}, layer_in


def test_parallel_setups_train_cannot_run_fail_fast():
    """FSDP1, and activation checkpointing in both the accelerate config and the spec, are
    refused before the model is loaded (the launched accelerator is checked, whatever config
    validation saw)."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    s = T.resolve_spec({"init_dir": "x", "data": "x", "out_dir": "x", "gradient_checkpointing": True})

    def acc(kind, fsdp2, ac=False):
        return SimpleNamespace(
            distributed_type=kind,
            is_fsdp2=fsdp2,
            state=SimpleNamespace(fsdp_plugin=SimpleNamespace(activation_checkpointing=ac)),
        )

    train_parallel.check_parallel_setup(s, acc(DistributedType.FSDP, True))
    train_parallel.check_parallel_setup(s, acc(DistributedType.MULTI_GPU, False))
    with pytest.raises(ValueError, match="FSDP1.*fsdp_version: 2"):
        train_parallel.check_parallel_setup(s, acc(DistributedType.FSDP, False))
    with pytest.raises(ValueError, match="fsdp_activation_checkpointing.*sft.gradient_checkpointing"):
        train_parallel.check_parallel_setup(s, acc(DistributedType.FSDP, True, ac=True))
    train_parallel.check_parallel_setup(
        {**s, "gradient_checkpointing": False}, acc(DistributedType.FSDP, True, ac=True)
    )
    with pytest.raises(ValueError, match="DEEPSPEED.*not supported"):
        train_parallel.check_parallel_setup(s, acc(DistributedType.DEEPSPEED, False))


def test_checkpoints_saved_in_save_dtype_resume_keeps_fp32(tmp_path):
    """save_dtype bfloat16: every saved folder holds the trained fp32 weights rounded to bf16 (one
    tensor for the tied embedding, config.json says bfloat16); training itself is unchanged (the
    log equals an fp32-saving run's), and the spec hash ignores save_dtype (a resume state stays
    valid)."""
    import json as _json

    init = make_model_dir(tmp_path / "init", tie=True)
    runs = {}
    for name, dt in (("f32", None), ("b16", "bfloat16")):
        d = tmp_path / name
        d.mkdir()
        spec = base_spec(init, d, max_steps=2, checkpoints={1: str(d / "ck1")}, save_dtype=dt)
        T.train(spec)
        runs[name] = spec
    a, b = load_weights(runs["f32"]["out_dir"]), load_weights(runs["b16"]["out_dir"])
    assert a.keys() == b.keys() and "lm_head.weight" not in b
    for k in a:
        assert a[k].dtype == torch.float32 and b[k].dtype == torch.bfloat16, k
        assert torch.equal(a[k].to(torch.bfloat16), b[k]), k
    ck = load_weights(runs["b16"]["checkpoints"][1])
    assert all(v.dtype == torch.bfloat16 for v in ck.values())
    cfg = _json.loads((Path(runs["b16"]["out_dir"]) / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"
    assert [r["loss"] for r in read_log(runs["f32"]["log"])] == [r["loss"] for r in read_log(runs["b16"]["log"])]
    s1 = T.resolve_spec(runs["f32"])
    assert train_state.training_spec_hash(s1) == train_state.training_spec_hash({**s1, "save_dtype": "bfloat16"})
    with pytest.raises(ValueError, match="save_dtype"):
        T.resolve_spec({**runs["f32"], "save_dtype": "int8"})


def test_resume_state_is_loaded_to_the_cpu_first(init_dir, tmp_path, monkeypatch):
    """The resume state is read memory-mapped onto the CPU (never straight onto the GPU beside
    the model), then copied into place: the resumed run ends where an uninterrupted one does."""
    import accelerate
    import accelerate.checkpointing as ac

    (tmp_path / "ref").mkdir()
    ref = base_spec(init_dir, tmp_path / "ref", max_steps=4)
    T.train(ref)
    spec = base_spec(
        init_dir, tmp_path, max_steps=4, checkpoints={2: str(tmp_path / "ck2")}, resume_dir=str(tmp_path / "resume")
    )
    orig_append = train_state.append_row

    def crash_at_3(fh, row):
        if row["step"] == 3:
            raise KeyboardInterrupt("killed")
        orig_append(fh, row)

    monkeypatch.setattr(T, "append_row", crash_at_3)  # the name train() calls (imported by name)
    with pytest.raises(KeyboardInterrupt):
        T.train(spec)
    monkeypatch.setattr(T, "append_row", orig_append)
    calls, models, asked = [], [], []
    orig_load, orig_model, orig_state = torch.load, ac.load_model, accelerate.Accelerator.load_state

    def spy(f, *a, **kw):
        calls.append((Path(f).name, kw.get("map_location"), kw.get("mmap")))
        return orig_load(f, *a, **kw)

    def spy_model(model, f, **kw):
        models.append((Path(f).name, kw.get("device")))
        return orig_model(model, f, **kw)

    def spy_state(self, *a, **kw):
        # one CPU process resolves accelerate's default to "cpu" too; several GPU processes
        # would resolve it to "on_device": what is asked for is what guards the GPU
        asked.append(kw.get("map_location"))
        return orig_state(self, *a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    monkeypatch.setattr(ac, "load_model", spy_model)
    monkeypatch.setattr(accelerate.Accelerator, "load_state", spy_state)
    assert T.train(spec)["resumed_from"] == 2
    assert asked == ["cpu"]
    assert models == [("model.safetensors", "cpu")]  # safetensors maps the file (its default backend)
    assert ("optimizer.bin", "cpu", True) in calls, calls
    a, b = load_weights(ref["out_dir"]), load_weights(spec["out_dir"])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_state_restores_rng_scheduler_and_noise_atomically(tmp_path):
    """What the SIGKILL test cannot see on this tiny model (no dropout): save_resume/
    restore_resume_state put back the python, numpy and torch RNG streams, the scheduler, the
    noise estimator and the optimizer exactly (accelerate's load_state swallows a failed RNG load,
    so this is checked here); a save killed between its two renames leaves the previous state,
    which is restored; a state of the old format is refused with a clear error."""
    import random

    import numpy as np
    from accelerate import Accelerator

    from ssd_math.noise import GradientNoiseEstimator

    acc = Accelerator()
    net = torch.nn.Linear(3, 2)
    model, opt = acc.prepare(net, torch.optim.AdamW(net.parameters(), lr=0.1))
    sched = torch.optim.lr_scheduler.LambdaLR(train_state._inner(opt), lambda i: 1.0 / (i + 1))
    est = GradientNoiseEstimator(ema=0.5)
    acc.register_for_checkpointing(sched, est)

    def step():
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        est.update(random.random() + 1.0, 1, float(np.random.rand()), 4)

    step()
    rdir = tmp_path / "resume"
    train_state.save_resume(rdir, acc, 1, 2.5, 10, "h")
    want = (
        {k: v.clone() for k, v in model.state_dict().items()},
        sched.state_dict(),
        est.state_dict(),
        float(opt.state_dict()["state"][0]["exp_avg"].sum()),
    )
    step()
    draws = (random.random(), float(np.random.rand()), torch.rand(3))
    os.replace(rdir, rdir.with_name(".resume.old"))  # killed between save_resume's two renames
    assert train_state.restore_resume_state(rdir, "h", acc) == (1, 2.5, 10)
    assert all(torch.equal(v, want[0][k]) for k, v in model.state_dict().items())
    assert (sched.state_dict(), est.state_dict()) == want[1:3]
    assert float(opt.state_dict()["state"][0]["exp_avg"].sum()) == want[3]
    step()
    assert (random.random(), float(np.random.rand())) == draws[:2] and torch.equal(torch.rand(3), draws[2])

    prog = json.loads((rdir / "progress.json").read_text())
    del prog["format"]  # as the hand-written state.pt format wrote it
    (rdir / "progress.json").write_text(json.dumps(prog))
    with pytest.raises(ValueError, match=re.escape(f"resume state in {rdir} has format 1 ")):
        train_state.restore_resume_state(rdir, "h", acc)


_SEE_ALLOC_CONF_AT_TORCH_IMPORT = r"""
import importlib.abc, os, sys
seen = []
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append((os.environ.get("PYTORCH_CUDA_ALLOC_CONF"), os.environ.get("PYTORCH_ALLOC_CONF")))
        return None
sys.meta_path.insert(0, Spy())
import ssd_math.train
print(repr(seen[0]))
"""


@pytest.mark.parametrize(
    "given,expected",
    [
        ({}, ("expandable_segments:True", None)),
        ({"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512"}, ("max_split_size_mb:512", None)),
        ({"PYTORCH_ALLOC_CONF": "expandable_segments:False"}, (None, "expandable_segments:False")),
    ],
)
def test_training_entry_point_sets_the_allocator_before_torch_is_imported(given, expected):
    """The memory plan (docs/memory_plan.md) assumes expandable segments: micro-batches from ~1k to
    33.8k tokens fragment the caching allocator otherwise. torch reads the setting from the
    environment, so it must be there when torch is imported; a user's own setting wins."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")}
    proc = subprocess.run(
        [sys.executable, "-c", _SEE_ALLOC_CONF_AT_TORCH_IMPORT],
        env={**env, **given},
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip().splitlines()[-1] == repr(expected)


def test_fsdp_jobs_get_a_rendezvous_port_of_their_own(tmp_path):
    """Two FSDP jobs on one node must not both take accelerate's default port 29500: the launch
    command derives the port from the SLURM job id (the same on every node of the job), or asks
    accelerate for a free one (0) outside SLURM; a one-process config needs no port. The
    command's port is what accelerate's parser reads (accelerate 1.15 launch_command_parser)."""
    from accelerate.commands.launch import launch_command_parser

    from ssd_math import launcher as L

    root = Path(__file__).resolve().parents[1]
    assert L.job_port({"SLURM_JOB_ID": "4242"}) != L.job_port({"SLURM_JOB_ID": "4243"})
    assert L.job_port({"SLURM_JOB_ID": "4242"}) == L.job_port({"SLURM_JOB_ID": "4242"})
    assert all(1024 < L.job_port({"SLURM_JOB_ID": str(i)}) < 32768 for i in (0, 1, 29499, 10**7 + 3))
    assert L.job_port({}) == 0
    fsdp = L.train_launcher(root / "envs/accelerate/fsdp.yaml", python=sys.executable)
    assert "--main_process_port" not in L.train_launcher(root / "envs/accelerate/gpu1.yaml")
    ports = []
    for job_env in ({"SLURM_JOB_ID": "4242"}, {"SLURM_JOB_ID": "4243"}, {}):
        env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
        # the shell expands the command as the rule's shell does; printf shows the argv it built
        argv = subprocess.run(
            ["bash", "-c", f"printf '%s\\n' {fsdp.split('accelerate launch', 1)[1]} --spec-json x"],
            env={**env, **job_env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        ports.append(launch_command_parser().parse_args(argv).main_process_port)
    assert ports == [L.job_port({"SLURM_JOB_ID": "4242"}), L.job_port({"SLURM_JOB_ID": "4243"}), 0]


def test_interrupt_after_step_stops_once_and_the_rerun_resumes(init_dir, tmp_path):
    """The resume drill (runtime.interrupt_sft_after_step): the run exits with code 75 right after
    its step-2 resume state is saved; run again with the same spec it resumes there (not from
    scratch) and ends with the weights and log of an uninterrupted run."""
    from ssd_math.train import INTERRUPT_EXIT, train

    (tmp_path / "ref").mkdir()
    ref = base_spec(init_dir, tmp_path / "ref", checkpoints={"2": str(tmp_path / "ref" / "s2")})
    train(ref)
    d = tmp_path / "drill"
    d.mkdir()
    spec = base_spec(
        init_dir, d, checkpoints={"2": str(d / "s2")}, resume_dir=str(d / "resume"), interrupt_after_step=2
    )
    with pytest.raises(SystemExit) as e:
        train(spec)
    assert e.value.code == INTERRUPT_EXIT == 75
    assert (d / "resume" / "progress.json").exists() and not (d / "out").exists()
    again = train(spec)
    assert again["resumed_from"] == 2 and again["steps"] == 4
    a, b = load_weights(ref["out_dir"]), load_weights(spec["out_dir"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_log(spec["log"])] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="interrupt_after_step 3 needs a resume_dir and a checkpoint"):
        train(base_spec(init_dir, d, interrupt_after_step=3))
