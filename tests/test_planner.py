"""Tests of ssd_math.planner (plan arithmetic, totals, formatting, benchmark parsing/merge) and of
ssd_math.memory_model (the SFT memory model) with the config check that reads it."""

from __future__ import annotations

import csv
import io
import math

import pytest
import yaml

from ssd_math import derive
from ssd_math.config import ConfigError, load_config, validate
from ssd_math.io import BENCHMARK_COLUMNS, read_benchmark
from ssd_math.planner import PlanError, format_plan, merge_measured, plan, plan_to_csv, plan_totals

from conftest import ROOT

THROUGHPUT = {
    "Qwen3.5-4B": {
        "generate_tokens_per_s_per_gpu": 2000.0,
        "train_tokens_per_s_per_gpu": 4000.0,
        "startup_s_per_job": 0,
    },
    "default": {"generate_tokens_per_s_per_gpu": 1000.0, "train_tokens_per_s_per_gpu": 1000.0},
}
JOBS = [
    {
        "rule": "sample_train",
        "name": "sample_base",
        "kind": "sample",
        "model": "Qwen3.5-4B",
        "n_prompts": 4000,
        "n_samples_per_prompt": 1,
        "mean_gen_tokens": 9000,
        "gpus": 4,
    },
    {
        "rule": "train_sft",
        "name": "train_ssd",
        "kind": "train",
        "model": "Qwen3.5-4B",
        "train_tokens": 36_000_000,
        "gpus": 8,
    },
    {
        "rule": "evaluate",
        "name": "eval_base_T0.7",
        "kind": "eval",
        "model": "Qwen3.5-4B",
        "n_prompts": 1000,
        "n_samples_per_prompt": 1,
        "mean_gen_tokens": 14000,
        "gpus": 2,
    },
    {
        "rule": "evaluate",
        "name": "eval_pass4",
        "kind": "eval",
        "model": "other",
        "n_prompts": 300,
        "n_samples_per_prompt": 4,
        "mean_gen_tokens": 10000,
        "gpus": 1,
        "startup_s": 360,
    },
]


def test_plan_arithmetic_and_consistency():
    rows = plan(JOBS, THROUGHPUT)
    by = {r["name"]: r for r in rows}
    s = by["sample_base"]
    assert s["gen_tokens"] == 4000 * 9000
    assert math.isclose(s["hours"], 4000 * 9000 / (2000 * 4) / 3600)
    t = by["train_ssd"]
    assert math.isclose(t["hours"], 36e6 / (4000 * 8) / 3600)
    p4 = by["eval_pass4"]  # unknown model -> default rates; startup added
    assert p4["gen_tokens"] == 300 * 4 * 10000
    assert math.isclose(p4["hours"], (300 * 4 * 10000 / 1000 + 360) / 3600)
    for r in rows:
        assert math.isclose(r["gpu_hours"], r["hours"] * r["gpus"])
        assert r["work_tokens"] == r["gen_tokens"] + r["prompt_tokens"] + r["train_tokens"]
        # tokens / throughput = hours (minus the fixed startup)
        assert math.isclose(
            (r["hours"] * 3600 - r["startup_s"]) * r["tokens_per_s_per_gpu"] * r["gpus"], r["work_tokens"]
        )
    tot = plan_totals(rows)
    assert tot["jobs"] == 4
    assert math.isclose(tot["hours"], sum(r["hours"] for r in rows))
    assert math.isclose(tot["gpu_hours"], sum(r["gpu_hours"] for r in rows))
    assert math.isclose(sum(k["gpu_hours"] for k in tot["by_kind"].values()), tot["gpu_hours"])
    assert tot["by_kind"]["eval"]["jobs"] == 2


def test_flat_throughput_prefill_and_epochs():
    flat = {
        "generate_tokens_per_s_per_gpu": 100.0,
        "prefill_tokens_per_s_per_gpu": 1000.0,
        "train_tokens_per_s_per_gpu": 50.0,
        "startup_s_per_job": 10,
    }
    rows = plan(
        [
            {
                "rule": "r",
                "name": "a",
                "kind": "sample",
                "n_prompts": 10,
                "n_samples_per_prompt": 2,
                "mean_gen_tokens": 100,
                "mean_prompt_tokens": 500,
            },
            {"rule": "r", "name": "b", "kind": "train", "train_tokens": 1000, "epochs": 3, "gpus": 2},
        ],
        flat,
    )
    a, b = rows
    assert a["gpus"] == 1 and a["prompt_tokens"] == 10_000
    assert math.isclose(a["hours"] * 3600, 2000 / 100 + 10_000 / 1000 + 10)
    assert b["train_tokens"] == 3000 and math.isclose(b["hours"] * 3600, 3000 / 100 + 10)


@pytest.mark.parametrize(
    "job, match",
    [
        ({"name": "x", "kind": "fly", "gpus": 1}, "kind"),
        ({"name": "x", "kind": "sample", "n_prompts": 1, "n_samples_per_prompt": 1}, "mean_gen_tokens"),
        ({"name": "x", "kind": "train"}, "train_tokens"),
    ],
)
def test_plan_errors_name_job_and_key(job, match):
    with pytest.raises(PlanError, match=match):
        plan([job], THROUGHPUT)


def test_missing_model_throughput_named():
    with pytest.raises(PlanError, match="Qwen9"):
        plan(
            [{"name": "x", "kind": "train", "train_tokens": 1, "model": "Qwen9"}],
            {"Qwen3.5-4B": THROUGHPUT["Qwen3.5-4B"]},
        )


def test_format_and_csv():
    rows = plan(JOBS, THROUGHPUT)
    text = format_plan(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["rule", "name", "kind"]
    assert len({len(ln) for ln in lines[:2]}) == 1  # header and rule line share a width
    assert "TOTAL" in text and "sample_base" in text
    assert f"{plan_totals(rows)['gpu_hours']:,.2f}" in lines[-1]
    got = list(csv.DictReader(io.StringIO(plan_to_csv(rows))))
    assert [r["name"] for r in got] == [j["name"] for j in JOBS]
    assert math.isclose(float(got[1]["gpu_hours"]), rows[1]["gpu_hours"])


# ------------------------------------------------------------------------ benchmark files

# What Snakemake 9 writes for `benchmark: "benchmarks/x.tsv"` with `repeat(..., 2)`; the
# second run ended before the first resource sample ("NA").
SAMPLE_TSV = (
    "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    "3725.4121\t1:02:05\t20480.53\t61234.11\t19876.02\t19990.40\t512.33\t88.01\t98.50\t3669.12\n"
    "3600.0000\t1:00:00\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n"
)


def test_read_benchmark_sample(tmp_path):
    p = tmp_path / "sample_base.tsv"
    p.write_text(SAMPLE_TSV)
    b = read_benchmark(p)
    assert b["n_runs"] == 2
    assert math.isclose(b["s_mean"], (3725.4121 + 3600.0) / 2)
    assert b["max_rss_mb"] == 20480.53 and b["s_max"] == 3725.4121
    assert tuple(SAMPLE_TSV.split("\n")[0].split("\t")) == BENCHMARK_COLUMNS


def test_read_benchmark_written_by_snakemake(tmp_path):
    bm = pytest.importorskip("snakemake.benchmark")
    rec = bm.BenchmarkRecord(
        running_time=12.5,
        max_rss=100.0,
        max_vms=200.0,
        max_uss=90.0,
        max_pss=95.0,
        io_in=1.0,
        io_out=2.0,
        cpu_usage=10.0,
        cpu_time=10.0,
    )
    # the constructor wraps these in 1-tuples; Snakemake assigns them for a real job
    rec.jobid, rec.rule_name, rec.wildcards = 3, "evaluate", {"arm": "base"}
    rec.params, rec.resources, rec.threads, rec.input = {}, {"gpu": 1}, 1, []
    rec.data_collected = True
    for ext, extended in ((".tsv", False), (".tsv", True), (".jsonl", False)):
        p = tmp_path / f"eval_{int(extended)}{ext}"
        bm.write_benchmark_records([rec], str(p), extended)
        b = read_benchmark(p)
        assert b["n_runs"] == 1 and math.isclose(b["s_mean"], 12.5)
        assert b["max_rss_mb"] == 100.0
    with pytest.raises(ValueError, match="not a Snakemake benchmark"):
        (tmp_path / "bad.tsv").write_text("a\tb\n1\t2\n")
        read_benchmark(tmp_path / "bad.tsv")


def test_merge_measured(tmp_path):
    rows = plan(JOBS, THROUGHPUT)
    (tmp_path / "sample_base.tsv").write_text(SAMPLE_TSV)
    merged = merge_measured(rows, [tmp_path / "sample_base.tsv"])
    by = {r["name"]: r for r in merged}
    s = by["sample_base"]
    assert math.isclose(s["measured_hours"], s["measured_s"] / 3600)
    assert math.isclose(s["measured_gpu_hours"], s["measured_hours"] * 4)
    assert math.isclose(s["ratio"], s["measured_hours"] / s["hours"])
    assert by["train_ssd"]["measured_hours"] is None and by["train_ssd"]["n_runs"] == 0
    # explicit {name: path} mapping, and via a job's declared benchmark path
    merged2 = merge_measured(rows, {"train_ssd": tmp_path / "sample_base.tsv"})
    assert {r["name"] for r in merged2 if r["measured_s"]} == {"train_ssd"}
    rows3 = plan([{**JOBS[2], "benchmark": str(tmp_path / "b" / "evaluate.tsv")}], THROUGHPUT)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "evaluate.tsv").write_text(SAMPLE_TSV)
    merged3 = merge_measured(rows3, [tmp_path / "b" / "evaluate.tsv"])
    assert merged3[0]["n_runs"] == 2
    text = format_plan(merged)
    assert "measured_hours" in text and "ratio" in text
    assert "measured_s" in plan_to_csv(merged).splitlines()[0]


def test_sft_memory_terms_and_the_4b_shape():
    """The formula adds the terms docs/memory_plan.md lists: 16 B/param static (sharded by FSDP),
    bf16 checkpointed inputs, and the larger of the loss chunk and one recomputed layer; the 4B
    shape counts 4.206 B parameters on the meta device."""
    from ssd_math import memory_model as P

    sizes = P.model_sizes(P.QWEN35_4B_TEXT)
    assert round(sizes["params"] / 1e9, 3) == 4.206 and sizes["embedding"] == 248320 * 2560
    lay = {"fixed": 1.0e8, "per_token": 2.0e5}
    one = P.sft_memory(P.QWEN35_4B_TEXT, 32768, sizes=sizes, layer=lay, measured_gap=False)
    t = one["terms"]
    assert t["weights_fp32"] + t["grads_fp32"] + t["adamw_fp32"] == 16 * sizes["params"]
    assert t["checkpointed_inputs"] == 32 * 32768 * 2560 * 2
    assert t["layer_recompute"] == 1.0e8 + 32768 * 2.0e5
    assert one["peak"] == pytest.approx(
        16 * sizes["params"]
        + t["checkpointed_inputs"]
        + t["hidden_out_and_grad"]
        + max(t["loss_chunk"], t["layer_recompute"])
    )
    four = P.sft_memory(P.QWEN35_4B_TEXT, 32768, processes=4, sizes=sizes, layer=lay)
    assert four["terms"]["adamw_fp32"] == 2 * sizes["params"] and four["terms"]["fsdp_gathered"] > 0
    assert four["peak"] < one["peak"]
    fp32 = P.sft_memory(P.QWEN35_4B_TEXT, 32768, sizes=sizes, layer=lay, mixed_precision=False)
    assert fp32["terms"]["checkpointed_inputs"] == 2 * t["checkpointed_inputs"]
    cap = one["peak"] + 1
    assert P.max_fitting_tokens(P.QWEN35_4B_TEXT, capacity=cap, sizes=sizes, layer=lay, measured_gap=False) == 32768


def test_sft_memory_sublayers_term_is_held_inputs_plus_the_largest_part():
    """With checkpoint_sublayers the recomputed layer holds its parts' inputs plus the largest
    part's saves (not the sum), for the layer kind where that is larger, at the micro-batch's
    tokens; counted on the 4B shape with flash-linear-attention's saves, the Gated DeltaNet's
    token mixer is that part and the term drops from 9.4 GB to under 6 GB at 33,792 tokens."""
    from ssd_math import memory_model as P

    sizes = P.model_sizes(P.QWEN35_4B_TEXT)
    lin = lambda f, t: {"fixed": f, "per_token": t}  # noqa: E731
    lay = {
        "sublayers": {
            "linear_attention": {"held": lin(0, 3e4), "parts": {"mixer": lin(1e8, 1.5e5), "mlp": lin(2e8, 7e4)}},
            "full_attention": {"held": lin(0, 3e4), "parts": {"mixer": lin(1e8, 8e4), "mlp": lin(2e8, 7e4)}},
        }
    }
    one = P.sft_memory(P.QWEN35_4B_TEXT, 32768, sizes=sizes, layer=lay)
    assert one["terms"]["layer_recompute"] == 32768 * 3e4 + 1e8 + 32768 * 1.5e5
    # short sequences: the MLP's bf16 weight copies are the larger part
    assert P.layer_recompute_bytes(lay, 100) == 100 * 3e4 + 2e8 + 100 * 7e4
    two = P.sft_memory(P.QWEN35_4B_TEXT, 16384, micro_batch=2, sizes=sizes, layer=lay)
    assert two["terms"]["layer_recompute"] == one["terms"]["layer_recompute"]

    whole = P.layer_saved_bytes(P.QWEN35_4B_TEXT, kernels="fla")
    nested = P.layer_saved_bytes(P.QWEN35_4B_TEXT, kernels="fla", sublayers=True)
    gdn = nested["sublayers"]["linear_attention"]
    assert set(gdn["parts"]) == {"input_layernorm", "linear_attn", "post_attention_layernorm", "mlp"}
    # held: the mixer's, the second norm's and the MLP's bf16 inputs (the layer input is counted
    # among the checkpointed inputs)
    assert gdn["held"]["per_token"] == 3 * 2560 * 2
    T = 33792
    assert P.layer_recompute_bytes(whole, T) == pytest.approx(9.39e9, rel=0.01)
    assert P.layer_recompute_bytes(nested, T) == pytest.approx(
        T * gdn["held"]["per_token"] + P.layer_recompute_bytes(gdn["parts"]["linear_attn"], T)
    )
    assert P.layer_recompute_bytes(nested, T) < 6.0e9
    on = P.sft_memory(P.QWEN35_4B_TEXT, T, sizes=sizes, layer=nested, measured_gap=False)["peak"]
    off = P.sft_memory(P.QWEN35_4B_TEXT, T, sizes=sizes, layer=whole, measured_gap=False)["peak"]
    assert off - on == pytest.approx(P.layer_recompute_bytes(whole, T) - P.layer_recompute_bytes(nested, T))
    cost = P.sublayer_recompute_flops(P.QWEN35_4B_TEXT, T)
    assert 0.05 < cost["fraction"] < 0.2


def test_plan_disk_and_reuse_before_after():
    """The real recipe's plan: a disk column (model folders in bf16, the fp32 resume state) and
    fewer GPU-hours with the Layout's reuse than without; the training-only sweeps sample nothing."""
    from ssd_math import planner as P

    cfg = load_config(ROOT / "config" / "real.yaml")
    rows = P.build_plan(cfg)
    sft = [r for r in rows if r["rule"] == "sft"]
    n_folders = len(cfg["sft"]["checkpoint_steps"]) + 1
    params = cfg["planner"]["expected"]["model_params"]
    assert all(r["disk_gb"] == pytest.approx(n_folders * params * 2 / 1e9) for r in sft)
    assert all(r["resume_gb"] == pytest.approx(12 * params / 1e9) for r in sft)
    before, after = P.plan_totals(P.build_plan(cfg, reuse=False)), P.plan_totals(rows)
    assert after["gpu_hours"] < before["gpu_hours"]
    extra = P.build_plan(cfg, extra_arms=True)
    sampled = {r["name"].split()[1] for r in extra if r["rule"] == "sample_train_shard"}
    assert {"lr1e-5", "lr7p5e-6", "const-lr", "batch64"}.isdisjoint(sampled) and "ssd" in sampled
    assert "# reuse of identical jobs" in P.reuse_summary(cfg)


def test_sft_memory_counts_fla_backward_workspace_and_the_measured_gap():
    """On the GPU the recomputed Gated DeltaNet layer's backward also holds flash-linear-attention's
    workspace (fla-core 0.6.0 chunk.py chunk_gated_delta_rule_bwd: h, dh, w, u, v_new, dv, dv2,
    dq, dk, dw), and the formula's CPU-measured shortfall is added on the activations."""
    from ssd_math import memory_model as P

    T, s = 33792, P.QWEN35_4B_TEXT
    ws = P.fla_backward_workspace(s, T)
    # h and dh: 528 chunks x 32 value heads x 128 x 128 bf16 = 0.554 GB each; the other eight
    # 33,792 x 32 x 128 bf16 = 0.277 GB each
    assert ws == 2 * (2 * 528 * 32 * 128 * 128 + 8 * T * 32 * 128)
    assert ws == pytest.approx(2 * 0.554e9 + 8 * 0.277e9, rel=0.002)
    lay, sizes = P.QWEN35_4B_LAYER_FLA_SUBLAYERS, P.QWEN35_4B_SIZES
    bare = P.sft_memory(s, T, sizes=sizes, layer=lay, measured_gap=False)
    fla = P.sft_memory(s, T, sizes=sizes, layer=lay, kernels="fla", measured_gap=False)
    full = P.sft_memory(s, T, sizes=sizes, layer=lay, kernels="fla")
    assert "fla_backward_workspace" not in bare["terms"]
    assert fla["peak"] - bare["peak"] == pytest.approx(ws)  # the layer term is the larger one here
    act = fla["peak"] - 16 * sizes["params"]
    assert full["terms"]["formula_gap"] == pytest.approx(act * (1 / 0.873 - 1))
    assert full["peak"] == pytest.approx(fla["peak"] + full["terms"]["formula_gap"])
    # one H100 at the recipe's length: 84.8 GB predicted, under 1 GB left
    assert full["peak"] / 1e9 == pytest.approx(84.78, abs=0.01)
    assert P.H100_BYTES - full["peak"] < 1e9 and P.H200_BYTES - full["peak"] > 60e9


def test_stored_4b_counts_are_what_the_planner_counts():
    """The config check's stored sizes and layer saves are memory_model.model_sizes's and
    layer_saved_bytes's on the 4B shape (flash-linear-attention's saves)."""
    from ssd_math import memory_model as P

    assert P.model_sizes(P.QWEN35_4B_TEXT) == P.QWEN35_4B_SIZES
    assert P.layer_saved_bytes(P.QWEN35_4B_TEXT, kernels="fla") == pytest.approx(P.QWEN35_4B_LAYER_FLA)
    nested = P.layer_saved_bytes(P.QWEN35_4B_TEXT, kernels="fla", sublayers=True)
    for kind, d in P.QWEN35_4B_LAYER_FLA_SUBLAYERS["sublayers"].items():
        assert nested["sublayers"][kind]["held"] == pytest.approx(d["held"])
        for part, v in d["parts"].items():
            assert nested["sublayers"][kind]["parts"][part] == pytest.approx(v), (kind, part)


def test_config_refuses_a_gpu_setup_that_leaves_less_than_8gb():
    """The real recipe on one 80 GB H100 leaves 0.7 GB: config validation refuses it, naming the
    arms, the numbers and the alternatives; as shipped (one H200) and with FSDP over 4 H100s it
    passes; a CPU setup is not checked."""
    import copy

    from ssd_math import memory_model as P

    raw = yaml.safe_load((ROOT / "config" / "real.yaml").read_text())
    cfg = validate(copy.deepcopy(raw))
    m = derive.training_memory(cfg, "ssd")
    assert m["headroom"] >= P.GPU_HEADROOM and m["capacity"] == 149e9
    h100 = copy.deepcopy(raw)
    h100["runtime"]["gpu_memory_gb"] = 85.5
    with pytest.raises(ConfigError) as e:
        validate(h100)
    msg = str(e.value)
    for want in (
        "sft.max_len 33792 (micro_batch 1; arms ssd, t13, topk5",
        "84.8 GB per GPU on 1 GPU(s)",
        "leaves 0.7 GB of runtime.gpu_memory_gb 85.5",
        "at least 8 GB must stay free",
        "envs/accelerate/fsdp.yaml: 36.9 GB per GPU",
        "runtime.gpu_memory_gb: 149",
        "sft.max_len <= 18432",
        "sft.max_len 50176 (micro_batch 1; arms len48k)",
    ):
        assert want in msg, (want, msg)
    fsdp = copy.deepcopy(h100)
    fsdp["runtime"]["accelerate_config"] = "envs/accelerate/fsdp.yaml"
    validate(fsdp)
    cpu = copy.deepcopy(h100)
    cpu["runtime"] = {"accelerate_config": "envs/accelerate/cpu.yaml", "device": "cpu", "gpu_memory_gb": 1}
    assert derive.training_memory(validate(cpu), "ssd") is None
