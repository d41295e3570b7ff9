"""The shipped base on two CPUs: its weights, and its accuracy at T0.7 on eval_main, under the
kernels of an AVX2-only CPU and of this one.

    . .venv/bin/activate && python bench/bench_base_isa.py [--isa native,avx2] [--no-write]

It runs on one CPU; the CPUs users run on differ in the kernels ATen, MKL and oneDNN
dispatch to, which can be capped on the CPU it runs on (``ATEN_CPU_CAPABILITY``,
``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``, as bench/bench_seed_matrix.py does): "avx2"
runs the kernels an AVX2-only EPYC runs, "native" this CPU's own. For each setting the bench
clones this repository's HEAD into an empty folder and runs the default pipeline up to the
base model's graded eval_main file at T0.7 (`snakemake --cores 2 <that file>`: fetch_base,
the synthetic data, the base's T grid, grading), then compares: the sha256 of the base weights
each run served (from fetch_base's provenance), accuracy (correct / n, Wilson interval at 95%,
n = eval_main prompts, one sample each), and the completions row by row (how many rows are
byte-identical, and where the first differing row first differs). It writes section
"base across CPUs" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

CAPS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {
        "ATEN_CPU_CAPABILITY": "avx512",
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
    },
}
TARGET = "results/eval/base/eval_main/T0.7.jsonl"


def run_cell(isa: str, tmp: Path) -> dict:
    clone = tmp / isa
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    # the clone's own library, whatever ssd_math the calling venv has installed
    env = {**os.environ, **CAPS[isa], "PYTHONPATH": str(clone / "src")}
    t0 = time.perf_counter()
    proc = subprocess.run(["snakemake", "--cores", "2", TARGET], cwd=clone, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{isa}: snakemake failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(ln) for ln in (clone / TARGET).read_text().splitlines() if ln.strip()]
    prov = (
        json.loads((clone / "results/models/base/provenance.json").read_text())
        if (clone / "results/models/base/provenance.json").exists()
        else {}
    )
    gen_meta = _gen_meta(clone)
    cap = ((gen_meta.get("machine") or {}).get("torch") or {}).get("cpu_capability")
    return {"isa": isa, "rows": rows, "wall": wall, "provenance": prov, "clone": clone, "cap": cap}


def _gen_meta(clone: Path) -> dict:
    from ssd_math.io import meta_path

    p = meta_path(clone / TARGET.replace("results/eval/", "results/generations/"))
    return json.loads(p.read_text()) if p.exists() else {}


def weights_sha(cell: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted((cell["clone"] / "results/models/base").glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--isa", default="native,avx2", help=f"comma list of {sorted(CAPS)}")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    from ssd_math.io import machine_info
    from ssd_math.stats import wilson_ci

    from _results import write_section

    isas = a.isa.split(",")
    with tempfile.TemporaryDirectory(prefix="ssd-isa-") as d:
        cells = [run_cell(isa, Path(d)) for isa in isas]
        for c in cells:
            c["sha"] = weights_sha(c)
    ref = cells[0]
    ref_by = {(r["prompt_id"], r["sample_index"]): r for r in ref["rows"]}
    lines = []
    for c in cells:
        n = len(c["rows"])
        k = sum(bool(r.get("correct")) for r in c["rows"])
        lo, hi = wilson_ci(k, n, 0.95)
        same = sum(ref_by[(r["prompt_id"], r["sample_index"])]["completion"] == r["completion"] for r in c["rows"])
        same_grade = sum(
            ref_by[(r["prompt_id"], r["sample_index"])].get("correct") == r.get("correct") for r in c["rows"]
        )
        lines.append(
            f"| {c['isa']} | {' '.join(f'{k_}={v}' for k_, v in CAPS[c['isa']].items()) or '(none)'} "
            f"| {c['cap']} | {c['sha'][:16]} | {k / n:.1%} [{lo:.1%}, {hi:.1%}] | {n} | {same} of {n} "
            f"| {same_grade} of {n} | {c['wall']:.0f} |"
        )
    m = machine_info()
    text = "\n".join(
        [
            "## base across CPUs",
            "",
            f"`python bench/bench_base_isa.py --isa {a.isa}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); "
            f"CPU: {m.get('cpu_model')}, {m.get('logical_cores')} logical cores, ISA "
            f"{', '.join(k_ for k_, v in (m.get('isa') or {}).items() if v)}. "
            f"Each row: a fresh clone, `snakemake --cores 2 {TARGET}` with ATen/MKL/oneDNN capped as shown "
            '("avx2": the kernels of an AVX2-only CPU). Accuracy: correct / n, 95% Wilson interval, '
            "one sample per eval_main prompt at T0.7; rows compared with the first row's.",
            "",
            "| kernels | environment | torch dispatched to | base weights sha256 | accuracy T0.7 [95% Wilson] | n | completions identical | grades identical | wall s |",
            "|---|---|---|---|---|---|---|---|---|",
            *lines,
            "",
        ]
    )
    print(text)
    if not a.no_write:
        write_section("base across CPUs", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
