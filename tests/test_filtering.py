"""The truncation filter drops exactly the length-stopped samples and says so."""

import pytest

from ssd_math.filtering import filter_samples


def _row(i, fr, toks=10):
    return {"prompt_id": f"p{i}", "sample_index": 0, "finish_reason": fr, "n_completion_tokens": toks}


def test_drops_length_stops_and_counts():
    rows = [_row(0, "stop", 5), _row(1, "length", 64), _row(2, "stop", 7), _row(3, "length", 64)]
    kept, dropped, summary = filter_samples(rows)
    assert [r["prompt_id"] for r in kept] == ["p0", "p2"]
    assert [r["prompt_id"] for r in dropped] == ["p1", "p3"]
    assert summary["n_kept"] == 2 and summary["n_dropped"] == 2 and summary["length_stop_rate"] == 0.5
    assert summary["mean_kept_completion_tokens"] == 6.0


def test_filter_off_keeps_everything():
    rows = [_row(0, "stop"), _row(1, "length")]
    kept, dropped, summary = filter_samples(rows, filter_length_stop=False)
    assert len(kept) == 2 and dropped == [] and summary["length_stop_rate"] == 0.5
    assert summary["filter_length_stop"] is False  # the config knob's name, recorded as given


def test_unknown_finish_reason_names_the_row():
    with pytest.raises(ValueError, match=r"sample row 1 \(prompt_id='p1'.*finish_reason"):
        filter_samples([_row(0, "stop"), _row(1, None)])


def test_nothing_kept_is_an_error():
    with pytest.raises(ValueError, match="kept no sample"):
        filter_samples([_row(0, "length")])


def _rows(n_stop: int, n_length: int) -> list[dict]:
    return [{"prompt_id": i, "finish_reason": "stop"} for i in range(n_stop)] + [
        {"prompt_id": n_stop + i, "finish_reason": "length"} for i in range(n_length)
    ]


def test_filter_stops_a_hot_arm_that_keeps_too_few_for_its_checkpoints():
    """t13 keeps 40% of 4,000 samples: 1,600 // 32 = 50 steps < checkpoint 56. The filter says
    so, naming the arm and both fixes, before any training starts; an arm that opted in to
    checkpoints past its end passes, as does one that keeps enough."""
    from ssd_math.filtering import check_reach

    sft = {
        "global_batch": 32,
        "epochs": 1,
        "max_steps": None,
        "checkpoint_steps": [7, 14, 21, 28, 35, 42, 49, 56],
        "checkpoints_past_end": "error",
    }
    kept, _, summary = filter_samples(_rows(1600, 2400))
    assert len(kept) == 1600
    with pytest.raises(ValueError) as e:
        check_reach("t13", summary, {"t13": sft}, samples_path="results-real/samples/t13.jsonl", min_kept_fraction=0.5)
    msg = str(e.value)
    for want in (
        "arm t13: the length filter kept 1600 of 4000 samples (40.0%",
        "min_kept_fraction assumed at least 50%",
        "reaches optimizer step 50",
        "asks for 56",
        "t13.sft.checkpoints_past_end: final",
        "steps <= 50",
        "max_new_tokens",
        "results-real/samples/t13.jsonl",
    ):
        assert want in msg, (want, msg)
    check_reach("t13", summary, {"t13": {**sft, "checkpoints_past_end": "final"}})
    _, _, enough = filter_samples(_rows(1792, 2208))  # 1,792 // 32 = 56
    check_reach("t13", enough, {"t13": sft})
    # a sweep arm training on these samples with a bigger batch is named too
    with pytest.raises(ValueError, match=r"batch64 \(global_batch 64 x 1 epoch\(s\)\) reaches optimizer step 28"):
        check_reach("ssd", enough, {"ssd": sft, "batch64": {**sft, "global_batch": 64}})


def test_filter_rule_script_runs_the_reach_check(tmp_path):
    """scripts/filter_samples.py (the rule's adapter) passes its params to check_reach."""
    import json
    import runpy
    from pathlib import Path
    from types import SimpleNamespace as NS

    samples = tmp_path / "t13.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in _rows(3, 5)))
    out = {k: str(tmp_path / f"{k}.out") for k in ("kept", "dropped", "summary")}
    sft = {
        "global_batch": 2,
        "epochs": 1,
        "max_steps": None,
        "checkpoint_steps": [1, 2],
        "checkpoints_past_end": "error",
    }
    script = str(Path(__file__).resolve().parents[1] / "scripts" / "filter_samples.py")

    class Named(list):  # Snakemake's Namedlist: a list with attribute access
        def __init__(self, **kw):
            super().__init__(kw.values())
            self.__dict__.update(kw)

    for steps, fails in (([1], False), ([1, 2], True)):
        sm = NS(
            input=Named(samples=str(samples)),
            output=Named(**out),
            log=[],
            rule="filter_samples",
            wildcards=NS(arm="t13"),
            params=NS(
                filter_length_stop=True, min_kept_fraction=0.5, sft_reach={"t13": {**sft, "checkpoint_steps": steps}}
            ),
        )
        if fails:
            with pytest.raises(ValueError, match=r"arm t13: the length filter kept 3 of 8 samples"):
                runpy.run_path(script, init_globals={"snakemake": sm})
        else:
            runpy.run_path(script, init_globals={"snakemake": sm})
