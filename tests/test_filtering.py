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
