"""Real data for rule prepare_real_data: real problems -> data/{train_prompts,eval_main,eval_hard}.jsonl,
the decontamination table data/decontam_pairs.csv and data/data_report.json.

Calls ssd_math.problem_sets (pool, eval sets; from the rows ssd_math.problem_sources loads and
validates) and ssd_math.decontam; the only logic here is the order: eval sets first, then the
training pool decontaminated against eval_main (eval_hard is a subset of it) until the budget is
met with clean prompts.

Decontamination loop: build the pool at the budget, remove every prompt that matches an eval
row, rebuild with those problems excluded (so the budget is still met), and repeat until a
rebuilt pool has no match (selections are stable: a rebuilt pool only swaps the removed rows
for the next ones in the same seeded order). Every removed pair goes into the table.

Called by scripts/prepare_real_data.py (the rule's adapter); :func:`prepare_real_data` takes plain arguments.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

from .config import ConfigError
from .decontam import decontaminate, max_similarity
from .io import write_json, write_jsonl, write_meta, write_text
from .problem_sets import build_eval_sets, build_training_pool

log = logging.getLogger("ssd_math.prepare_real_data")

PAIR_COLUMNS = (
    "train_id",
    "eval_id",
    "reason",
    "jaccard",
    "same_answer",
    "train_source",
    "eval_source",
    "train_answer",
    "eval_answer",
    "train_problem",
    "eval_problem",
)
MAX_ROUNDS = 10
# The repository's own copies of the MIT-licensed sources (data/real/README.md). A relative
# data.real.root (this default included) resolves against the workflow folder, the clone.
DEFAULT_ROOT = "data/real"


def enabled(sources: list[dict], part: str | None = None) -> list[dict]:
    """Sources that are not switched off (``enabled: false``), without that key. With ``part``
    (``train``/``eval``) each spec also carries ``config_key`` (``data.real.<part>.sources[i]``),
    which ssd_math.problem_sources names in its errors."""
    return [
        {
            **{k: v for k, v in s.items() if k != "enabled"},
            **({"config_key": f"data.real.{part}.sources[{i}]"} if part else {}),
        }
        for i, s in enumerate(sources)
        if s.get("enabled", True)
    ]


def resolve_root(real: dict, base_dir: str | os.PathLike) -> Path:
    """The folder of the local sources: ``data.real.root`` (default :data:`DEFAULT_ROOT`), a
    relative one taken against ``base_dir`` (the workflow folder), so a run from any working
    directory (``snakemake --directory``) reads the clone's data/real."""
    root = Path(real.get("root") or DEFAULT_ROOT).expanduser()
    return root if root.is_absolute() else Path(base_dir) / root


def check_local_sources(real: dict, base_dir: str | os.PathLike) -> Path:
    """Config-time check (rules/data.smk, before any job): every enabled source with a
    ``path`` names an existing file. Returns the resolved root; raises
    :class:`ssd_math.config.ConfigError` naming ``data.real.root`` or each bad source's key."""
    root = resolve_root(real, base_dir)
    given = real.get("root") or DEFAULT_ROOT
    problems: list[str] = []
    local = [
        (f"data.real.{part}.sources[{i}]", s)
        for part in ("train", "eval")
        for i, s in enumerate(real[part]["sources"])
        if s.get("enabled", True) and s.get("path")
    ]
    relative = [(k, s) for k, s in local if not Path(s["path"]).expanduser().is_absolute()]
    if relative and not root.is_dir():
        problems.append(
            f"data.real.root = {given!r}: folder {root} not found (a relative root resolves "
            f"against the workflow folder {Path(base_dir)}); it must hold the local files of "
            f"{', '.join(s['name'] for _, s in relative)}. The repository ships them in "
            f"{DEFAULT_ROOT}/ (data/real/README.md); set data.real.root to the folder that holds "
            "them, or give each source an absolute path"
        )
        local = [(k, s) for k, s in local if (k, s) not in relative]
    for key, s in local:
        p = Path(s["path"]).expanduser()
        f = p if p.is_absolute() else root / p
        if not f.is_file():
            where = "" if p.is_absolute() else f" (relative to data.real.root = {given!r})"
            hub = f", or remove it to download {s['hub_id']}" if s.get("hub_id") else ""
            problems.append(
                f"{key}.path = {s['path']!r} (dataset {s['name']!r}): file {f} not found"
                f"{where}; point it at an existing .jsonl/.parquet file{hub}, or set "
                f"{key}.enabled: false"
            )
    if problems:
        raise ConfigError("invalid config (real data):\n  - " + "\n  - ".join(problems))
    return root


def _clip(text, n: int = 300) -> str:
    t = " ".join(str(text or "").split())
    return t if len(t) <= n else t[: n - 1] + "…"


def pairs_csv(pairs: list[dict], train_by_id: dict, eval_by_id: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=PAIR_COLUMNS, lineterminator="\n")
    w.writeheader()
    for p in pairs:
        t, e = train_by_id.get(p["train_id"], {}), eval_by_id.get(p["eval_id"], {})
        w.writerow(
            {
                "train_id": p["train_id"],
                "eval_id": p["eval_id"],
                "reason": p["reason"],
                "jaccard": p["jaccard"],
                "same_answer": p["same_answer"],
                "train_source": t.get("dataset") or t.get("source"),
                "eval_source": e.get("eval_source") or e.get("source"),
                "train_answer": t.get("answer"),
                "eval_answer": e.get("answer"),
                "train_problem": _clip(t.get("problem")),
                "eval_problem": _clip(e.get("problem")),
            }
        )
    return buf.getvalue()


def prepare_real_data(
    real: dict, *, seed: int, outputs: dict, cache_dir: str | None = None, root: str | None = None
) -> dict:
    """Build and write the real-data artifacts; return the data report.

    ``real`` is the config's ``data.real`` section; ``outputs`` maps train_prompts, eval_main,
    eval_hard, decontam (CSV), report (JSON) to paths. ``root``/``cache_dir`` default to the
    section's own ``root``/``cache_dir`` (a relative root: against the working directory here;
    the rule passes :func:`resolve_root`'s absolute folder).
    """
    root = root if root is not None else real.get("root") or DEFAULT_ROOT
    cache_dir = cache_dir if cache_dir is not None else real.get("cache_dir")
    ev, tr = real["eval"], real["train"]
    dc = {k: real["decontam"][k] for k in ("n", "threshold", "threshold_same_answer")}

    eval_rep: dict = {}
    main, hard = build_eval_sets(
        enabled(ev["sources"], "eval"),
        main_size=ev["main_size"],
        hard_size=ev["hard_size"],
        seed=seed,
        hard_rule=ev.get("hard_rule", "rank"),
        cache_dir=cache_dir,
        root=root,
        report=eval_rep,
    )
    log.info(
        "eval_main: %d rows %s; eval_hard: %d rows %s",
        len(main),
        eval_rep["main_composition"],
        len(hard),
        eval_rep["hard_composition"],
    )

    train_sources = enabled(tr["sources"])
    train_specs = enabled(tr["sources"], "train")
    levels = tr.get("levels")
    excluded: set[str] = set()
    all_pairs: list[dict] = []
    seen_rows: dict[str, dict] = {}
    rounds = []
    for rnd in range(1, MAX_ROUNDS + 1):
        pool_rep: dict = {}
        pool = build_training_pool(
            train_specs,
            levels=levels,
            budget=tr.get("budget"),
            seed=seed,
            cache_dir=cache_dir,
            root=root,
            exclude_problems=excluded,
            report=pool_rep,
        )
        seen_rows.update({r["id"]: r for r in pool})
        kept, pairs = decontaminate(pool, main, **dc)
        rounds.append({"round": rnd, "pool": len(pool), "removed": len(pool) - len(kept), "pairs": len(pairs)})
        log.info("decontamination round %d: %d of %d prompts match an eval row", rnd, len(pool) - len(kept), len(pool))
        if not pairs:
            break
        all_pairs += pairs
        removed_ids = {p["train_id"] for p in pairs}
        excluded |= {r["problem"] for r in pool if r["id"] in removed_ids}
    else:
        raise RuntimeError(f"decontamination did not converge in {MAX_ROUNDS} rounds")

    n = write_jsonl(outputs["train_prompts"], kept)
    write_meta(
        outputs["train_prompts"],
        rule="prepare_real_data",
        split="train_prompts",
        n_rows=n,
        seed=seed,
        sources=train_sources,
        levels=levels,
        budget=tr.get("budget"),
    )
    for name, rows in (("eval_main", main), ("eval_hard", hard)):
        n = write_jsonl(outputs[name], rows)
        write_meta(
            outputs[name],
            rule="prepare_real_data",
            split=name,
            n_rows=n,
            seed=seed,
            sources=enabled(ev["sources"]),
            hard_rule=ev.get("hard_rule", "rank"),
        )
    eval_by_id = {r["id"]: r for r in main}
    write_text(outputs["decontam"], pairs_csv(all_pairs, seen_rows, eval_by_id))
    report = {
        "seed": seed,
        "root": str(root),
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "train": {**pool_rep, "n_written": len(kept)},
        "eval": eval_rep,
        "decontam": {
            **dc,
            "rounds": rounds,
            "n_pairs": len(all_pairs),
            "n_removed_prompts": len({p["train_id"] for p in all_pairs}),
            "by_reason": {r: sum(p["reason"] == r for p in all_pairs) for r in ("exact", "ngram")},
            # the most similar pairs that were kept: a calibration aid for the threshold
            "closest_kept": max_similarity(kept, main, n=dc["n"], top=10),
        },
        "disabled_sources": [s["name"] for s in tr["sources"] + ev["sources"] if s.get("enabled", True) is False],
    }
    write_json(outputs["report"], report)
    return report
