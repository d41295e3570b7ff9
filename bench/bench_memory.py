"""The SFT memory formula (ssd_math.memory_model.sft_memory, docs/memory_plan.md) against measured peaks.

    python bench/bench_memory.py            # the table below + bench/RESULTS.md "SFT memory"
    python bench/bench_memory.py --quick    # one small shape (a smoke run, nothing written)
    python bench/bench_memory.py --predictions-only   # the 4B predictions only (after a planner change)

Each row is one fresh process that trains a random-initialised Qwen3.5 text model of a scaled-down
shape (Qwen3.5's layer mix: 3 Gated DeltaNet + 1 full-attention layer per 4) for 2 optimizer steps
through ``ssd_math.train.train`` itself, with the real recipe's settings: bf16 autocast
(``ACCELERATE_MIXED_PRECISION=bf16``), gradient checkpointing with ``checkpoint_sublayers`` (one
row without it, the same shape: the saving measured beside the predicted one), the chunked loss,
2 micro-batches of one sequence per step, instrumentation on. The measured peak is the peak of the bytes of live
tensor storages while ``train`` runs (a dispatch mode that sees every op's output: the CPU
counterpart of ``torch.cuda.max_memory_allocated``, which bench/gpu_check_sft.py reads). The predicted
peak is ``sft_memory(..., host_is_device=True)``: on the CPU the tracker's host copy is in the
same memory. Then the formula's predictions for Qwen3.5-4B on GPUs (the step the CPU cannot
measure; bench/gpu_check.sh measures it on a GPU machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SMALL = {
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "linear_conv_kernel_dim": 4,
    "tie_word_embeddings": True,
    "full_attention_interval": 4,
}


# (shape, tokens per sequence, loss chunk, checkpoint_sublayers): sizes and lengths chosen so that
# one recomputed layer is the largest activation term (long sequences, a small vocabulary and
# loss chunk), a visible share of the peak next to the 16 bytes per parameter of weights + grads +
# AdamW: the term checkpoint_sublayers changes
def _shape(hidden, layers, ffn, vocab, heads_dim, lin_dim):
    return {
        **SMALL,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": ffn,
        "vocab_size": vocab,
        "head_dim": heads_dim,
        "linear_num_key_heads": 4,
        "linear_num_value_heads": 8,
        "linear_key_head_dim": lin_dim,
        "linear_value_head_dim": lin_dim,
    }


CASES = [
    (_shape(256, 4, 768, 4096, 64, 32), 4096, 256, True),
    (_shape(256, 4, 768, 4096, 64, 32), 4096, 256, False),
    (_shape(192, 8, 512, 4096, 48, 24), 3072, 256, True),
    (_shape(320, 4, 960, 4096, 80, 40), 2560, 512, True),
]
REAL_TOKENS = 33792  # config/real.yaml sft.max_len (32k completion + prompt)


def live_bytes_mode():
    """A dispatch mode that counts the bytes of live tensor storages and their peak: on the CPU
    the counterpart of ``torch.cuda.max_memory_allocated`` (tensors only, no allocator cache or
    interpreter memory). Every op output's storage is counted once, until it is freed."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live, self.cur, self.peak = {}, 0, 0

        def _free(self, key, n):
            if self.live.pop(key, None) is not None:
                self.cur -= n

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and not t.is_meta:
                    st = t.untyped_storage()
                    key, n = st.data_ptr(), st.nbytes()
                    if n and key not in self.live:
                        self.live[key] = weakref.ref(st, lambda _r, k=key, n=n: self._free(k, n))
                        self.cur += n
                        self.peak = max(self.peak, self.cur)
            return out

    return LiveBytes()


def measure_one(shape: dict, tokens: int, chunk: int, sublayers: bool) -> dict:
    """In this process: train 2 steps and return the measured peak (bytes above the baseline)."""
    from ssd_math import memory_model
    from ssd_math import train as T
    from ssd_math.io import read_jsonl
    from ssd_math.tokenizer import build_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    init = tmp / "init"
    memory_model.text_config(shape).save_pretrained(init)
    build_tokenizer(["Q: 0123456789 A:"], init)
    rows = [{"prompt": "Q: ", "completion": "7" * tokens, "finish_reason": "length"}] * 4
    spec = {
        "init_dir": str(init),
        "init_random": True,
        "data": rows,
        "out_dir": str(tmp / "out"),
        "log": str(tmp / "log.jsonl"),
        "max_len": tokens,
        "global_batch": 2,
        "micro_batch": 1,
        "max_steps": 2,
        "warmup_steps": 1,
        "gradient_checkpointing": True,
        "checkpoint_sublayers": sublayers,
        "loss_chunk_tokens": chunk,
        "instrument": {"enabled": True},
        "progress": False,
    }
    mode = live_bytes_mode()
    with mode:
        T.train(spec)
    log = read_jsonl(tmp / "log.jsonl")
    return {"measured": mode.peak, "steps": len(log)}


def run_case(shape: dict, tokens: int, chunk: int, sublayers: bool) -> dict:
    env = {
        **os.environ,
        "ACCELERATE_MIXED_PRECISION": "bf16",
        "ACCELERATE_USE_CPU": "True",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }
    out = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps([shape, tokens, chunk, sublayers])],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(
            f"case {shape['hidden_size']}x{shape['num_hidden_layers']} at {tokens} tokens failed:\n{out.stderr[-3000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(cases) -> tuple[str, list[dict]]:
    from ssd_math.memory_model import sft_memory

    rows, lines = (
        [],
        [
            "| hidden x layers, FFN, vocab | params | tokens | loss chunk | checkpoint_sublayers "
            "| measured MiB | predicted MiB | predicted / measured | layer recompute MiB (predicted) |",
            "|---|---|---|---|---|---|---|---|---|",
        ],
    )
    for shape, tokens, chunk, sublayers in cases:
        m = run_case(shape, tokens, chunk, sublayers)
        # the formula itself (no measured gap: that is what this table measures)
        pred = sft_memory(
            shape, tokens, chunk_tokens=chunk, host_is_device=True, sublayers=sublayers, measured_gap=False
        )
        r = {
            "shape": shape,
            "tokens": tokens,
            "chunk": chunk,
            "measured": m["measured"],
            "predicted": pred["peak"],
            "params": pred["sizes"]["params"],
            "sublayers": sublayers,
        }
        r["ratio"] = r["predicted"] / r["measured"]
        rows.append(r)
        lines.append(
            f"| {shape['hidden_size']} x {shape['num_hidden_layers']}, "
            f"{shape['intermediate_size']}, {shape['vocab_size']} | {r['params'] / 1e6:.1f} M "
            f"| {tokens} | {chunk} | {'on' if sublayers else 'off'} | {r['measured'] / 2**20:.0f} "
            f"| {r['predicted'] / 2**20:.0f} | {r['ratio']:.3f} "
            f"| {pred['terms']['layer_recompute'] / 2**20:.0f} |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines), rows


def real_predictions() -> str:
    """The formula at Qwen3.5-4B's shape: 1 GPU and FSDP x 4 at the recipe's length, with
    checkpoint_sublayers (config/real.yaml) and without, the terms, the longest length that fits
    an H100 (less the CUDA reserve), and the knob's compute price."""
    from ssd_math.memory_model import (
        FORMULA_MEASURED_RATIO,
        GPU_HEADROOM,
        H100_BYTES,
        H200_BYTES,
        QWEN35_4B_TEXT,
        fla_backward_workspace,
        layer_recompute_bytes,
        layer_saved_bytes,
        max_fitting_tokens,
        model_sizes,
        sft_memory,
        sublayer_recompute_flops,
    )

    sizes = model_sizes(QWEN35_4B_TEXT)
    whole = layer_saved_bytes(QWEN35_4B_TEXT, kernels="fla")
    nested = layer_saved_bytes(QWEN35_4B_TEXT, kernels="fla", sublayers=True)
    gdn = nested["sublayers"]["linear_attention"]
    parts = ", ".join(f"{name} {layer_recompute_bytes(d, REAL_TOKENS) / 1e9:.2f}" for name, d in gdn["parts"].items())
    cost = sublayer_recompute_flops(QWEN35_4B_TEXT, REAL_TOKENS)
    out = [
        f"Qwen3.5-4B text model: {sizes['params'] / 1e9:.3f} B parameters "
        f"(embedding {sizes['embedding'] / 1e9:.3f} B, largest layer {sizes['layer_max'] / 1e6:.1f} M); "
        f"an 80 GB H100 has {H100_BYTES / 1e9:.1f} GB, an H200 {H200_BYTES / 1e9:.0f} GB, and "
        f"{GPU_HEADROOM / 1e9:.0f} GB must stay free. flash-linear-attention's backward "
        f"workspace at {REAL_TOKENS} tokens: "
        f"{fla_backward_workspace(QWEN35_4B_TEXT, REAL_TOKENS) / 1e9:.2f} GB; the measured gap: "
        f"activations x (1 / {FORMULA_MEASURED_RATIO} - 1). One "
        f"recomputed layer with flash-linear-attention's saves: {whole['fixed'] / 1e9:.2f} GB "
        f"+ {whole['per_token'] / 1e3:.0f} kB per token; with checkpoint_sublayers at "
        f"{REAL_TOKENS} tokens, a Gated DeltaNet layer's parts save (GB) {parts}, and their "
        f"inputs held {layer_recompute_bytes(gdn['held'], REAL_TOKENS) / 1e9:.2f} GB. Its price: "
        f"{cost['extra'] / 1e9:.2f} GFLOP per token more (one more forward of every token "
        f"mixer) on a step of {cost['step'] / 1e9:.1f} GFLOP per token: "
        f"+{100 * cost['fraction']:.1f}%.",
        "",
        "| setup | checkpoint_sublayers | tokens | peak GB | weights+grads+AdamW GB | "
        "checkpointed inputs GB | loss chunk GB | layer recompute GB | FLA backward workspace GB | "
        "measured gap GB | FSDP gathered GB | free on an H100 GB | free on an H200 GB | "
        "longest length leaving 8 GB of an H100 | ... of an H200 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, n in (("1 GPU (gpu1.yaml)", 1), ("FSDP x 4 (fsdp.yaml), per GPU", 4)):
        for knob, layer in (("on", nested), ("off", whole)):
            m = sft_memory(QWEN35_4B_TEXT, REAL_TOKENS, processes=n, sizes=sizes, layer=layer, kernels="fla")
            t = m["terms"]
            fits = [
                max_fitting_tokens(
                    QWEN35_4B_TEXT, capacity=cap - GPU_HEADROOM, processes=n, sizes=sizes, layer=layer, kernels="fla"
                )
                for cap in (H100_BYTES, H200_BYTES)
            ]
            out.append(
                f"| {name} | {knob} | {REAL_TOKENS} | {m['peak'] / 1e9:.1f} | "
                f"{(t['weights_fp32'] + t['grads_fp32'] + t['adamw_fp32']) / 1e9:.1f} | "
                f"{t['checkpointed_inputs'] / 1e9:.2f} | {t['loss_chunk'] / 1e9:.2f} | "
                f"{t['layer_recompute'] / 1e9:.2f} | {t['fla_backward_workspace'] / 1e9:.2f} | "
                f"{t['formula_gap'] / 1e9:.2f} | {t.get('fsdp_gathered', 0) / 1e9:.2f} | "
                f"{(H100_BYTES - m['peak']) / 1e9:.1f} | {(H200_BYTES - m['peak']) / 1e9:.1f} "
                f"| {fits[0]} | {fits[1]} |"
            )
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="the first case only; nothing written")
    ap.add_argument(
        "--predictions-only",
        action="store_true",
        help="recompute the 4B predictions only; keep the measured table of the last full run",
    )
    args = ap.parse_args(argv)
    if args.one:
        shape, tokens, chunk, sublayers = json.loads(args.one)
        print(json.dumps(measure_one(shape, tokens, chunk, sublayers)))
        return 0
    if args.predictions_only:
        # the measured rows depend on the training code only, the predictions on the planner: a
        # planner change reruns the second (a full run measures every row again, ~10 min idle)
        from _results import RESULTS, write_section

        old = RESULTS.read_text()
        start = old.index("## SFT memory\n")
        body = old[start:].split("\n## ", 1)[0]
        measured = body[body.index("| hidden x layers") : body.index("\nQwen3.5-4B text model:")].rstrip()
        real = real_predictions()
        print(real)
        write_section(
            "SFT memory",
            "## SFT memory\n\n`python bench/bench_memory.py` (CPU, bf16 "
            "autocast, one process per row; docs/memory_plan.md). Measured = peak "
            "bytes of live tensors while `ssd_math.train.train` runs; predicted = "
            "`ssd_math.memory_model.sft_memory` without the measured gap. The 4B predictions "
            "below: `python bench/bench_memory.py --predictions-only` (the measured rows "
            "above are the last full run's).\n\n" + measured + "\n\n" + real + "\n",
        )
        return 0
    text, rows = table(CASES[:1] if args.quick else CASES)
    real = real_predictions()
    print("\n" + real)
    worst = max(abs(r["ratio"] - 1) for r in rows)
    saving = ""
    for on in (r for r in rows if r["sublayers"]):
        off = next(
            (
                r
                for r in rows
                if not r["sublayers"]
                and r["shape"] == on["shape"]
                and r["tokens"] == on["tokens"]
                and r["chunk"] == on["chunk"]
            ),
            None,
        )
        if off:
            saving += (
                f"checkpoint_sublayers at {on['shape']['hidden_size']} x "
                f"{on['shape']['num_hidden_layers']}, {on['tokens']} tokens: peak "
                f"{(off['measured'] - on['measured']) / 2**20:.0f} MiB lower measured, "
                f"{(off['predicted'] - on['predicted']) / 2**20:.0f} MiB predicted\n"
            )
    print(f"\nworst |predicted / measured - 1| = {worst:.3f}\n{saving}")
    if not args.quick:
        from _results import write_section

        write_section(
            "SFT memory",
            "## SFT memory\n\n`python bench/bench_memory.py` (CPU, bf16 "
            "autocast, one process per row; docs/memory_plan.md). Measured = peak "
            "bytes of live tensors while `ssd_math.train.train` runs; predicted = "
            "`ssd_math.memory_model.sft_memory` without the measured gap.\n\n"
            + text
            + f"\n\nworst |predicted / measured - 1| = {worst:.3f}\n\n{saving}\n"
            + real
            + "\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
