"""bench/gpu_check.sh and bench/gpu_check_sft.py, the SFT check for an offline GPU machine (no
package registry): its dry run in an environment holding only that machine's packages plus the
carried wheels, the kernel each Gated DeltaNet layer called, what it leaves in OUT_DIR and on the
disk, the deadline and the bisection, and an out-of-memory error as a result."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from conftest import ROOT

BENCH = ROOT / "bench"


def _gc():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("gpu_check_sft", BENCH / "gpu_check_sft.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------------
# kernels
# ------------------------------------------------------------------------------------------------

# A stand-in for flash-linear-attention's package layout (fla.ops.gated_delta_rule), found by
# transformers' own resolution when its Qwen3.5 modeling is imported; on the CPU it computes with
# transformers' reference so that a model trains through it.
FAKE_FLA = {
    "fla/__init__.py": '__version__ = "0.6.0"\n',
    "fla/ops/__init__.py": "",
    "fla/ops/gated_delta_rule/__init__.py": textwrap.dedent("""
        def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None,
                                   output_final_state=False, use_qk_l2norm_in_kernel=False,
                                   cu_seqlens=None, **kwargs):
            from transformers.models.qwen3_5 import modeling_qwen3_5 as Q
            return Q.torch_chunk_gated_delta_rule.__wrapped__(
                q, k, v, g, beta, initial_state=initial_state, output_final_state=output_final_state,
                use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)
        """),
}

KERNEL_PROBE = textwrap.dedent("""
    import json, sys
    import torch
    sys.path.insert(0, {bench!r})
    import gpu_check_sft as G
    from ssd_math import memory_model
    from transformers import AutoModelForCausalLM
    rec = G.KernelRecorder().install()
    model = AutoModelForCausalLM.from_config(memory_model.text_config(G.TINY))
    model(input_ids=torch.randint(0, 512, (1, 32))).logits.float().sum().backward()
    print(json.dumps(rec.summary()))
    """)


def test_fla_ran_although_causal_conv1d_fell_back(tmp_path):
    """The log holds transformers' causal-conv1d "falling back" warning (it is never carried),
    yet the Gated DeltaNet layers called flash-linear-attention's function: the check says fla
    ran, per layer, from the function objects called, not from the log."""
    for rel, text in FAKE_FLA.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "src")])}
    proc = subprocess.run(
        [sys.executable, "-c", KERNEL_PROBE.format(bench=str(BENCH))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "`causal_conv1d_fn` is falling back" in proc.stderr  # what the old check grepped for
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["gated_delta_rule"] == "fla" and summary["causal_conv1d"] == "reference"
    # TINY: 4 layers, every 4th full attention -> layers 0-2 are Gated DeltaNet
    assert set(summary["layers"]) == {"0", "1", "2"}
    for per in summary["layers"].values():
        assert per["torch_chunk_gated_delta_rule"] == "fla.ops.gated_delta_rule.chunk_gated_delta_rule"
        assert per["causal_conv1d_fn"] == "transformers.models.qwen3_5.modeling_qwen3_5.causal_conv1d_fn"


def test_the_reference_is_named_reference_and_the_recorder_leaves_no_trace():
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.models.qwen3_5 import modeling_qwen3_5 as Q

    from ssd_math import memory_model

    gc = _gc()
    before = (Q.Qwen3_5GatedDeltaNet.forward, Q.torch_chunk_gated_delta_rule)
    rec = gc.KernelRecorder().install(force_reference=True)
    try:
        model = AutoModelForCausalLM.from_config(memory_model.text_config(gc.TINY))
        model(input_ids=torch.randint(0, 512, (1, 16)))
    finally:
        rec.uninstall()
    s = rec.summary()
    assert s["gated_delta_rule"] == "reference" and s["unresolved"] == []
    assert s["functions"]["torch_chunk_gated_delta_rule"] == [
        "transformers.models.qwen3_5.modeling_qwen3_5.torch_chunk_gated_delta_rule"
    ]
    assert (Q.Qwen3_5GatedDeltaNet.forward, Q.torch_chunk_gated_delta_rule) == before
    assert gc.kernel_kind("fla.ops.gated_delta_rule.chunk.chunk_gated_delta_rule") == "fla"
    assert gc.kernel_kind("causal_conv1d.cpp_functions.causal_conv1d_fn") == "causal_conv1d"


# ------------------------------------------------------------------------------------------------
# one run, the deadline, the bisection
# ------------------------------------------------------------------------------------------------


def test_out_of_memory_is_a_result_naming_its_phase(tmp_path, monkeypatch):
    import torch

    from ssd_math import train as T

    gc = _gc()
    monkeypatch.setattr(gc.Meter, "__init__", lambda self, cuda: setattr(self, "cuda", True))
    monkeypatch.setattr(gc.Meter, "reset", lambda self: None)
    monkeypatch.setattr(gc.Meter, "peak", lambda self: (123_000_000, 150_000_000))

    def oom_in_backward(spec):  # the phase wrapper (below) has entered the backward
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def fake_meter_phases(meter, phases, state, on_phase=None):
        state["phase"] = "backward"
        phases["forward"] = {
            "peak_allocated_bytes": 80_000_000_000,
            "peak_reserved_bytes": 81_000_000_000,
            "seconds": 1.0,
            "calls": 1,
        }

    monkeypatch.setattr(gc, "meter_phases", fake_meter_phases)
    monkeypatch.setattr(T, "train", oom_in_backward)
    # run_one replaces the save_model that train() calls (its own process never saves a model):
    # restored after
    monkeypatch.setattr(T, "save_model", T.save_model)
    out = tmp_path / "rec.json"
    gc.run_one(gc.TINY, 64, True, out, steps=2, workdir=tmp_path / "w")
    rec = json.loads(out.read_text())
    assert rec["oom"]["phase"] == "backward" and "out of memory" in rec["oom"]["message"]
    assert rec["steps_done"] == 0 and rec["state"] == "done"
    assert rec["phases"]["forward"] == {"peak_allocated_gb": 80.0, "peak_reserved_gb": 81.0, "seconds": 1.0, "calls": 1}


def _check(gc, tmp_path, **kw):
    args = gc.argparse.Namespace(
        out_dir=str(tmp_path / "out"),
        dry_run=True,
        lengths=None,
        steps=2,
        deadline_s=480.0,
        no_uninstrumented=False,
        bisect=True,
        bisect_step=1024,
        capacity_gb=None,
        scratch=str(tmp_path / "s"),
    )
    for k, v in kw.items():
        setattr(args, k, v)
    return gc.Check(args)


def test_no_run_starts_that_would_not_end_by_the_deadline(tmp_path, monkeypatch):
    gc = _gc()
    c = _check(gc, tmp_path, deadline_s=100.0)
    c.result["runs"] = [{"tokens": 33792, "wall_total_s": 150.0}, {"tokens": 16384, "wall_total_s": 40.0}]
    monkeypatch.setattr(c, "elapsed", lambda: 70.0)  # 30 s left, a run takes ~40 s
    monkeypatch.setattr(gc.subprocess, "run", lambda *a, **k: pytest.fail("a run was started"))
    rec = c.run(33792, False, "test")
    assert rec["skipped"].startswith("30 s left") and "~40 s" in rec["skipped"]
    saved = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert saved["runs"][-1]["skipped"] and saved["complete"] is False  # written before the end


def _fake_child(rec: dict):
    """A stand-in for the run's process: writes ``rec`` where the check reads it."""

    def run(cmd, **kw):
        one = json.loads(cmd[cmd.index("--one") + 1])
        Path(one[3]).write_text(json.dumps(rec))
        Path(one[4]).mkdir(parents=True, exist_ok=True)
        (Path(one[4]) / "config.json").write_text("{}")
        return subprocess.CompletedProcess(cmd, 0)

    return run


def test_a_run_is_merged_with_the_plan_and_the_mfu(tmp_path, monkeypatch):
    gc = _gc()
    c = _check(gc, tmp_path)
    phases = {
        "forward": {"peak_allocated_gb": 0.004, "peak_reserved_gb": 0.006, "seconds": 1.0, "calls": 4},
        "backward": {"peak_allocated_gb": 0.005, "peak_reserved_gb": 0.007, "seconds": 2.0, "calls": 4},
    }
    # the GPU as the run's torch saw it (the check's own process opens no CUDA context)
    child = {
        "state": "done",
        "steps_done": 2,
        "phases": phases,
        "tokens_per_s": 1000.0,
        "device": {"name": "NVIDIA H100 80GB HBM3", "total_bytes": 85_520_000_000},
    }
    monkeypatch.setattr(gc.subprocess, "run", _fake_child(child))
    rec = c.run(64, True, "test")
    pred = c.predict(64, True)
    assert rec["predicted_peak_gb"] == round(pred["peak"] / 1e9, 6)
    assert rec["phases"]["backward"]["predicted_gb"] == rec["predicted_peak_gb"]
    assert rec["peak_allocated_gb"] == 0.005 and rec["peak_reserved_gb"] == 0.007 and rec["fits"] is True
    fpt = gc.flops_per_token(gc.TINY, c.sizes["params"], 64)
    assert rec["mfu"] == round(1000.0 * fpt / 989e12, 4)
    assert rec["scratch_bytes_before_cleanup"] == 2 and not (c.scratch / "run0").exists()
    assert c.result["gpu"] == "NVIDIA H100 80GB HBM3" and c._device_bytes() == 85_520_000_000

    # the planner failing (another version's signature, say) costs the prediction, not the run
    monkeypatch.setattr(c.memory_model, "sft_memory", lambda *a, **k: (_ for _ in ()).throw(TypeError("new arg")))
    rec = c.run(64, False, "test")
    assert rec["predicted_peak_gb"] is None and rec["phases"]["forward"]["predicted_gb"] is None
    assert rec["peak_allocated_gb"] == 0.005 and "allocated_over_predicted" not in rec
    saved = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert saved["plan_error"] == "TypeError: new arg" and len(saved["runs"]) == 2


def test_bisection_finds_the_longest_length_that_fits(tmp_path, monkeypatch):
    gc = _gc()
    c = _check(gc, tmp_path, capacity_gb=0.05)
    c.result["runs"] = [
        {"tokens": 16384, "instrument": True, "fits": True},
        {"tokens": 33792, "instrument": True, "fits": True},
    ]
    probes = []

    def fake_run(tokens, instrument, why):
        probes.append(tokens)
        rec = {"tokens": tokens, "instrument": instrument, "fits": tokens <= 50_000}
        c.result["runs"].append(rec)
        return rec

    monkeypatch.setattr(c, "run", fake_run)
    c.bisect()
    lf = c.result["longest_fit"]
    assert lf["tokens"] == 49152 and lf["first_not_fitting"] - lf["tokens"] <= 1024
    assert all(t % 1024 == 0 for t in probes) and len(probes) <= 12
    assert probes[0] == max(c.result["planned_longest_fit"], 33792 + 1024)


# ------------------------------------------------------------------------------------------------
# the dry run in the offline GPU machine's package set
# ------------------------------------------------------------------------------------------------

IMAGE_LIST = BENCH / "gpu_check_image.txt"
# Stand-ins: no CPU build of torch 2.11 is on the package index this machine reaches, so this
# environment's torch (CPU) serves; numpy 2.5.2 has no wheel for Python 3.11: this environment's
# numpy serves. Left out: triton (GPU-only: without it fla's import fails and transformers falls
# back, as on any CPU) and torchvision / torchaudio (the image's are built for its torch 2.11, and
# no CPU build for the stand-in torch is at hand; the check imports neither).
STAND_INS = {"torch", "numpy"}
LEFT_OUT = {"triton", "torchvision", "torchaudio"}


def image_packages() -> dict[str, str | None]:
    out = {}
    for line in IMAGE_LIST.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, ver = line.strip().partition("==")
            out[name] = ver or None
    return out


def _link_distribution(dist, site: Path) -> None:
    """This environment's installed ``dist`` made importable from ``site`` (its top-level files
    and folders, metadata included, as symbolic links)."""
    base = Path(dist.locate_file(""))
    tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
    for top in tops:
        src, dst = base / top, site / top
        if src.exists() and not dst.exists() and not top.endswith(".pth") and top != "__pycache__":
            dst.symlink_to(src)


def build_image_env(root: Path) -> tuple[Path, list[str]]:
    """A venv (no system site-packages) whose site holds only the offline GPU machine's
    distributions: the versions its list names, fetched for this Python where the index has them,
    else this environment's copy (:data:`STAND_INS`); those it does not pin, this environment's
    copy where installed (the check needs none that is not). Returns (its python, notes)."""
    notes = []
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    pinned = []
    for name, ver in image_packages().items():
        if name in LEFT_OUT:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: nothing the check imports (else the dry run fails)
        if ver and name not in STAND_INS and dist.version != ver:
            pinned.append(f"{name}=={ver}")
            continue
        if ver and dist.version != ver:
            notes.append(f"{name} {dist.version} stands in for the image's {ver}")
        _link_distribution(dist, site)
    if pinned:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--target",
                str(site),
                *pinned,
            ],
            check=True,
            timeout=900,
        )
    return py, notes


@pytest.fixture(scope="module")
def image_env(request):
    """(python, carried wheels folder, notes), cached across test runs by the image list, this
    interpreter and the carried wheel list."""
    sh = (BENCH / "gpu_check.sh").read_text()
    carried = sh[sh.index("WHEELS=(") :].split(")", 1)[0]  # the carried wheels' names and versions
    key = hashlib.sha256("".join([IMAGE_LIST.read_text(), sys.executable, sys.version, carried]).encode()).hexdigest()[
        :16
    ]
    root = Path(request.config.cache.mkdir(f"gpu_check_image_{key}"))
    done = root / "ready.json"
    if not done.exists():
        py, notes = build_image_env(root)
        pyv = f"{sys.version_info[0]}.{sys.version_info[1]}"
        subprocess.run(
            ["bash", str(BENCH / "gpu_check.sh"), "--wheels"],
            check=True,
            timeout=900,
            env={**os.environ, "GPU_CHECK_WHEELS": str(root / "wheels"), "GPU_CHECK_WHEELS_PYTHON": pyv},
        )
        done.write_text(json.dumps({"python": str(py), "notes": notes}))
    info = json.loads(done.read_text())
    return Path(info["python"]), root / "wheels", info["notes"]


@pytest.mark.slow
def test_dry_run_with_only_the_image_packages_and_the_wheels(tmp_path, image_env):
    """``bash bench/gpu_check.sh OUT --dry-run`` where python3 sees the image's distributions and
    nothing else (this project's own dependencies, jsonschema among them, are not there): it
    installs the carried wheels into a scratch folder, runs the instrumented and the
    uninstrumented step, and leaves gpu_check.json and gpu_check.log in OUT, nothing else, no
    scratch and no saved model."""
    py, wheels, _notes = image_env
    probe = subprocess.run([str(py), "-c", "import jsonschema"], capture_output=True, text=True)
    assert probe.returncode != 0, "the image environment must not hold jsonschema"
    out, tmpdir = tmp_path / "OUT", tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{py.parent}:{env['PATH']}", GPU_CHECK_WHEELS=str(wheels), TMPDIR=str(tmpdir))
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), str(out), "--dry-run", "--lengths", "64"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log"]
    # the scratch folder (the wheels' site, the runs) is gone; torch's own caches may stay
    assert [p.name for p in tmpdir.iterdir() if p.name.startswith("gpu_check")] == []
    log = (out / "gpu_check.log").read_text()
    assert "transformers-5.19.0-py3-none-any.whl" in log and "rpds_py-2026.9.1" in log
    res = json.loads((out / "gpu_check.json").read_text())
    assert res["complete"] and res["dry_run"] and res["gpu"] is None
    assert res["transformers"] == "5.19.0" and res["accelerate"] == "1.15.0"
    assert res["flash_linear_attention"] == "0.6.0"  # carried; its kernels need a GPU
    assert [(r["tokens"], r["instrument"]) for r in res["runs"]] == [(64, True), (64, False)]
    for r in res["runs"]:
        assert r["state"] == "done" and r["steps_done"] == 2 and r["oom"] is None and r["fits"]
        assert r["step_tokens"] == 2 * 64 and r["tokens_per_s"] > 0
        assert {"forward", "backward", "optimizer"} <= set(r["phases"])
        assert ("tracker" in r["phases"]) == r["instrument"]
        for p in r["phases"].values():
            assert p["peak_allocated_gb"] > 0 and p["calls"] > 0 and p["predicted_gb"] > 0
        assert r["predicted_peak_gb"] > 0 and 0.5 < r["allocated_over_predicted"] < 2.0
        assert r["kernels"]["gated_delta_rule"] == "reference" and set(r["kernels"]["layers"]) == {"0", "1", "2"}
        assert r["final_save"].startswith("skipped") and r["disk_free_gb_after"] > 0
    assert res["kernel_gated_delta_rule"] == "reference"
    disk = res["disk"]
    assert disk["scratch_bytes_left"] == 0 and disk["model_saved"] is False
    assert disk["free_gb_start"] > 0 and abs(disk["free_gb_end"] - disk["free_gb_start"]) < 1.0


def test_rehearsal_check_reads_the_gated_delta_rule_warning_not_causal_conv1d_s(tmp_path):
    """bench/gpu_check.py (the rehearsal on a GPU) says the fast kernels ran when the training log
    holds only causal-conv1d's "falling back" warning, and not when it holds the delta rule's."""
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    gcr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gcr)
    conv = (
        "[transformers] `causal_conv1d_fn` is falling back to its reference PyTorch implementation "
        "because `causal_conv1d` is not installed.\n"
    )
    gdn = (
        "[transformers] `chunk_gated_delta_rule` is falling back to its reference PyTorch implementation "
        "because `flash-linear-attention` is not installed.\n"
    )
    logs = tmp_path / "logs" / "train"
    logs.mkdir(parents=True)
    (logs / "sft_a.log").write_text(conv)
    assert gcr.collect(tmp_path)["training"]["fla_kernels"] is True
    (logs / "sft_b.log").write_text(conv + gdn)
    t = gcr.collect(tmp_path)["training"]
    assert t["fla_kernels"] is False and t["fell_back"] == ["sft_b"]


def test_report_is_the_results_section_of_a_gpu_check_json():
    gc = _gc()
    run = {
        "tokens": 33792,
        "instrument": True,
        "state": "done",
        "steps_done": 2,
        "fits": True,
        "phases": {
            "forward": {"peak_allocated_gb": 70.1},
            "backward": {"peak_allocated_gb": 78.4},
            "optimizer": {"peak_allocated_gb": 69.0},
            "tracker": {"peak_allocated_gb": 67.5},
        },
        "peak_allocated_gb": 78.4,
        "peak_reserved_gb": 80.2,
        "predicted_peak_gb": 79.2,
        "allocated_over_predicted": 0.99,
        "tokens_per_s": 5400.0,
        "mfu": 0.41,
        "kernels": {"gated_delta_rule": "fla"},
    }
    res = {
        "gpu": "NVIDIA H100 80GB HBM3",
        "gpu_memory_gb": 85.0,
        "params": 4.206e9,
        "shape": {"hidden_size": 2560, "num_hidden_layers": 32},
        "complete": True,
        "runs": [
            run,
            {"tokens": 16384, "instrument": True, "oom": {"phase": "backward"}, "phases": {}},
            {"tokens": 33792, "instrument": False, "skipped": "20 s left", "phases": {}},
        ],
        "kernel_gated_delta_rule": "fla",
        "kernel_causal_conv1d": "reference",
        "longest_fit": {"tokens": 43008, "first_not_fitting": 44032},
        "planned_longest_fit": 43008,
        "disk": {"free_gb_start": 50.0, "free_gb_end": 49.9},
        "elapsed_s": 431.0,
    }
    text = gc.report(res)
    assert text.startswith("## SFT GPU check\n")
    assert (
        "| 33792 | yes | 70.10 | 78.40 | 69.00 | 67.50 | 78.40 | 80.20 | 79.20 | 0.990 | 5400 | 0.410 | fla | fits |"
    ) in text
    assert "| 16384 | yes |" in text and "out of memory in backward |" in text
    assert "skipped: 20 s left |" in text and "Longest length that fits: 43008 tokens" in text


@pytest.mark.slow
def test_a_kill_keeps_what_was_measured(tmp_path):
    """The outer time limit's SIGTERM (to the check's process group) mid-run: the JSON holds the
    run in flight with the phases it had metered, and says the check was terminated."""
    import signal
    import time

    out, scratch = tmp_path / "out", tmp_path / "scratch"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(BENCH / "gpu_check_sft.py"),
            str(out),
            "--dry-run",
            "--lengths",
            "64",
            "--steps",
            "50",
            "--scratch",
            str(scratch),
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rec = scratch / "run0.json"
    t0 = time.time()
    while time.time() - t0 < 240:
        if rec.exists() and "backward" in json.loads(rec.read_text() or "{}").get("phases", {}):
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the first run metered no backward in 240 s")
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 1
    res = json.loads((out / "gpu_check.json").read_text())
    assert res["terminated"] and not res["complete"]
    (run,) = res["runs"]
    assert run["killed"] == "the check was terminated during this run" and run["state"] == "running"
    assert run["phases"]["backward"]["peak_allocated_gb"] > 0 and run["fits"] is None
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json"]


def test_carried_wheels_are_the_project_s_pins_and_fit_the_limit():
    """What gpu_check.sh carries is what pyproject.toml pins (where it pins the package), and the
    image already has none of them at that version."""
    import re
    import tomllib

    sh = (BENCH / "gpu_check.sh").read_text()
    carried = dict(re.findall(r"([A-Za-z0-9_.-]+)==([^\s)]+)", sh[sh.index("WHEELS=(") :].split(")", 1)[0]))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(
        re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(.+)", d).groups()
        for d in project["dependencies"] + project["optional-dependencies"]["vllm"]
        if "==" in d
    )
    assert {"transformers", "jsonschema", "flash-linear-attention", "fla-core", "rpds-py"} <= set(carried)
    for name, ver in carried.items():
        if name in pins:
            assert pins[name] == ver, name
    image = image_packages()
    assert all(image.get(n) != v for n, v in carried.items())
    assert "LIMIT_KIB=65536" in sh
