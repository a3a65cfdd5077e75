"""CHAMP from the champ-dataset package, and the resumable sampler."""

from __future__ import annotations

import pytest

from nemo_rence.data.champ import champ_answer, load_champ
from nemo_rence.data.sampler import PromptSampler


@pytest.mark.parametrize(
    ("raw", "answer"),
    [
        ("239", "239"),
        ("@@1/3@@", "1/3"),
        ("@@2*C(10, 5)@@, or equivalently @@504@@", "504"),
        ("@@(20*10^15-2)/17@@, or equivalently 1176470588235294", "1176470588235294"),
        ("0 is the only possible value", "0"),
        ("100 (i.e., all values)", "100"),
        ("No", "No"),
        ("@@x=0, y=2@@ and @@x=9, y=11@@", None),
        ("The sequence is not periodic", None),
    ],
)
def test_champ_answers_are_reduced_to_one_final_answer(raw, answer):
    assert champ_answer(raw) == answer


def test_champ_loads_the_verifiable_problems_and_reports_the_rest():
    result = load_champ()
    assert result.report.rows == 270
    assert result.report.kept == len(result.records) > 150
    assert set(result.report.skipped) == {"free_form"}
    first = result.records[0]
    assert first.id == "P_Combinatorics_1" and first.answer == "239" and "@@" not in first.problem
    assert len({r.id for r in result.records}) == len(result.records)


def test_every_index_once_per_epoch_with_a_new_order_each_epoch():
    s = PromptSampler(10, seed=3)
    e0, e1 = s.take(10), s.take(10)
    assert sorted(e0) == sorted(e1) == list(range(10))
    assert e0 != e1 and s.epoch == 1


def test_resume_from_state_dict_continues_exactly():
    a = PromptSampler(7, seed=5)
    a.take(4)
    state = a.state_dict()
    expected = a.take(12)  # crosses two epoch boundaries
    b = PromptSampler(7, seed=999)
    b.load_state_dict(state)
    assert b.take(12) == expected
    assert (b.epoch, b.position) == (a.epoch, a.position)


def test_state_dict_survives_a_json_round_trip():
    import json

    a = PromptSampler(5, seed=1)
    a.take(3)
    state = json.loads(json.dumps(a.state_dict()))
    b = PromptSampler(5)
    b.load_state_dict(state)
    assert b.take(6) == a.take(6)


def test_no_shuffle_is_in_order_and_size_mismatch_is_refused():
    s = PromptSampler(3, shuffle=False)
    assert s.take(5) == [0, 1, 2, 0, 1]
    with pytest.raises(ValueError, match="same data"):
        PromptSampler(4).load_state_dict(s.state_dict())
