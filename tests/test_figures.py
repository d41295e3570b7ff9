"""Figures: each function writes a PNG and plots the expected series (inspected before saving)."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ssd_math import figures, figures_training
from ssd_math.io import write_jsonl


def _png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    return data


def _sweeps_csv(path, sets=("eval_main", "eval_hard"), conf=0.95):
    rows = []
    for s in sets:
        for t in (0.6, 0.7, 1.0):
            rows.append({"evalset": s, "family": "T grid", "name": f"T{t}", "temperature": t, "min_p": 0.0})
        rows.append({"evalset": s, "family": "preset", "name": "precise", "temperature": 0.6, "min_p": 0.0})
        rows.append({"evalset": s, "family": "preset", "name": "general", "temperature": 1.0, "min_p": 0.0})
        for mp in (0.05, 0.2):
            rows.append({"evalset": s, "family": "min-p", "name": f"minp{mp}", "temperature": 1.0, "min_p": mp})
    for r in rows:
        for c, v in (("accuracy", 0.4), ("boxed", 0.9)):
            r.update({c: v, f"{c}_lo": v - 0.1, f"{c}_hi": v + 0.05})
        r.update({"n_prompts": 20, "k": 1, "method": "Wilson score interval (k=1)", "conf": conf})
    pl.DataFrame(rows).write_csv(path)


def test_figure_a_series(tmp_path):
    csv = tmp_path / "sweeps.csv"
    _sweeps_csv(csv)
    out = tmp_path / "a.png"
    info = figures.figure_a(csv, out, sets=["eval_main", "eval_hard"])
    _png(out)
    assert len(info) == 6  # 2 rows x (accuracy on 2 sets + boxed rate)
    top_main, bot_main = info[0], info[3]
    assert top_main["series"] == ["T grid", "preset precise", "preset general"]
    # bottom row: the min-p sweep and the preset at the sweep temperature (general, T 1.0)
    assert bot_main["series"] == ["preset general", "min-p @ T1"]
    assert len(info[2]["series"]) == 2 * 3  # boxed rate: both sets, T grid + 2 presets each


def _log(path, n=8, *, frac=0.05, g2=True):
    rows = []
    for s in range(1, n + 1):
        rows.append(
            {
                "step": s,
                "loss": 1.0 / s,
                "ppl": float(np.exp(1.0 / s)),
                "lr": 1e-3 * min(s, 3) / 3,
                "grad_norm": 1.0 + 0.1 * s,
                "frac_changed": frac,
                "G2_ema": (0.04 if s > 1 else -0.01) if g2 else None,
                "B_simple": 50.0 if g2 else None,
                "B_big": 4,
                "dw_hist": {"edges_log10": [-4.0, -3.0, -2.0], "counts": [50, 0, 10, 5, 2, 0]},
            }
        )
    write_jsonl(path, rows)


def test_noise_figures_series(tmp_path):
    _log(tmp_path / "ssd.jsonl")
    _log(tmp_path / "t13.jsonl", g2=False)
    _log(tmp_path / "bf16.jsonl", frac=0.0)
    arms = {"ssd": tmp_path / "ssd.jsonl", "t13": tmp_path / "t13.jsonl"}
    runs = {**arms, "bf16-state": tmp_path / "bf16.jsonl"}

    info = figures_training.figure_b(arms, tmp_path / "b.png", checkpoint_steps=[2, 4])
    _png(tmp_path / "b.png")
    assert [p["title"] for p in info] == ["ssd", "t13"]
    assert info[0]["series"] == ["observed |g| per step", "estimated |G| at checkpoints"]
    assert info[1]["series"] == ["observed |g| per step"]  # no noise estimate in that log

    info = figures_training.weight_change(
        runs, tmp_path / "w.png", noise_runs=["bf16-state"], labels={"bf16-state": "bf16-state (bf16)"}
    )
    _png(tmp_path / "w.png")
    assert info[0]["series"] == ["ssd", "t13", "bf16-state (bf16)"]

    info = figures_training.dw_hist(runs, tmp_path / "h.png")
    _png(tmp_path / "h.png")
    assert len(info) == 3
    # first step, peak-LR step (3: the lr ramps to its max at step 3) and last step
    assert info[0]["series"] == ["step 1", "step 3 (peak LR)", "step 8"]

    info = figures_training.train_ppl(runs, tmp_path / "p.png", noise_runs=["bf16-state"])
    _png(tmp_path / "p.png")
    assert info[0]["series"] == ["ssd", "t13", "bf16-state"]


def test_hist_steps():
    rows = [{"step": s, "lr": lr} for s, lr in zip(range(1, 6), [1, 5, 5, 3, 1])]
    assert figures_training.hist_steps(rows) == [1, 2, 5]
    assert figures_training.hist_steps([]) == []


def _checkpoints_csv(path, conf=0.95):
    rows = []
    for arm in ("ssd", "t13"):
        for ck, step, acc in (("base", 0, 0.3), ("step2", 2, 0.35), ("final", 4, 0.4)):
            rows.append(
                {
                    "arm": arm,
                    "checkpoint": ck,
                    "step": step,
                    "evalset": "eval_hard",
                    "condition": "T0.7",
                    "n_prompts": 30,
                    "accuracy": acc,
                    "accuracy_lo": acc - 0.1,
                    "accuracy_hi": acc + 0.1,
                    "method": "Wilson score interval (k=1)",
                    "conf": conf,
                }
            )
    pl.DataFrame(rows).write_csv(path)


def _metrics_csv(path, conf=0.95):
    rows = [
        {
            "kind": "grid",
            "evalset": "eval_hard",
            "model": m,
            "temperature": t,
            "n_prompts": 30,
            "accuracy": 0.4,
            "accuracy_lo": 0.3,
            "accuracy_hi": 0.5,
            "boxed": 0.9,
            "boxed_lo": 0.8,
            "boxed_hi": 0.95,
            "method": "percentile bootstrap over prompts",
            "conf": conf,
        }
        for m in ("base", "ssd")
        for t in (0.6, 1.0)
    ]
    pl.DataFrame(rows).write_csv(path)


def test_checkpoint_accuracy_series(tmp_path):
    csv = tmp_path / "c.csv"
    _checkpoints_csv(csv)
    info = figures_training.checkpoint_accuracy(csv, tmp_path / "c.png")
    _png(tmp_path / "c.png")
    assert info[0]["series"] == ["ssd", "t13"]
    assert "eval_hard" in info[0]["title"] and "n=30" in info[0]["title"]


def test_figures_legible_at_page_width(tmp_path, monkeypatch):
    """Every figure's smallest text is >= 10 CSS px once its PNG is scaled into the report's
    column (figures.PAGE_PX at a 1280 px window), with five runs (the |Δw| histograms used to put
    five panels in one row) and five arms."""
    seen = {}
    save = figures._save

    def spy(fig, path):
        save(fig, path)
        data = open(path, "rb").read()
        width = int.from_bytes(data[16:20], "big")  # the PNG's IHDR width
        seen[str(path)] = (figures.min_text_px(fig, width_px=width), width, len(fig.axes))

    for module in (figures, figures_training):  # each calls its own name for the shared _save
        monkeypatch.setattr(module, "_save", spy)
    runs = {}
    for name in ("ssd", "t13", "topk5", "lr1e-5", "bf16-state"):
        _log(tmp_path / f"{name}.jsonl")
        runs[name] = tmp_path / f"{name}.jsonl"
    _sweeps_csv(tmp_path / "s.csv")
    figures.figure_a(tmp_path / "s.csv", tmp_path / "a.png", sets=["eval_main", "eval_hard"])
    figures_training.figure_b(runs, tmp_path / "b.png", checkpoint_steps=[2, 4])
    figures_training.weight_change(runs, tmp_path / "w.png")
    figures_training.dw_hist(runs, tmp_path / "h.png")
    figures_training.train_ppl(runs, tmp_path / "p.png")
    figures_training.training_curves(runs, tmp_path / "t.png")
    assert len(seen) == 6
    for path, (px, width, _n_axes) in seen.items():
        assert px >= 10, f"{path}: smallest text {px:.1f} px at the page width (PNG {width} px wide)"
    assert seen[str(tmp_path / "h.png")][2] == 5  # five panels (2 rows of <= 3), no empty slot


def test_ci_labels_follow_the_tables_conf(tmp_path, monkeypatch):
    """Every figure that draws intervals names their level from its table's ``conf`` column (the
    stats.conf the intervals were computed at): at 0.9 its text says 90%, never 95%."""
    from matplotlib.text import Text

    texts = {}
    save = figures._save

    def spy(fig, path):
        texts[Path(path).name] = [t.get_text() for t in fig.findobj(Text)]
        save(fig, path)

    monkeypatch.setattr(figures, "_save", spy)
    _sweeps_csv(tmp_path / "s.csv", conf=0.9)
    _metrics_csv(tmp_path / "m.csv", conf=0.9)
    _checkpoints_csv(tmp_path / "c.csv", conf=0.9)
    figures.figure_a(tmp_path / "s.csv", tmp_path / "a.png", sets=["eval_main", "eval_hard"])
    figures.figure_c(tmp_path / "m.csv", tmp_path / "c_fig.png", hard_set="eval_hard", models=["base", "ssd"])
    figures_training.checkpoint_accuracy(tmp_path / "c.csv", tmp_path / "k.png")
    assert sorted(texts) == ["a.png", "c_fig.png", "k.png"]
    for name, t in texts.items():
        assert any("90% CI" in x for x in t), (name, t)
        assert not any("95%" in x for x in t), (name, t)
    # the level is the table's, so a table that does not record it cannot be labelled
    pl.read_csv(tmp_path / "c.csv").drop("conf").write_csv(tmp_path / "noconf.csv")
    with pytest.raises(ValueError, match="'conf' column"):
        figures_training.checkpoint_accuracy(tmp_path / "noconf.csv", tmp_path / "x.png")


@pytest.mark.parametrize(
    "module, fn",
    [
        (figures, "figure_a"),
        (figures_training, "figure_b"),
        (figures_training, "weight_change"),
        (figures_training, "dw_hist"),
        (figures_training, "train_ppl"),
        (figures_training, "checkpoint_accuracy"),
    ],
)
def test_figure_functions_are_documented(module, fn):
    assert getattr(module, fn).__doc__
