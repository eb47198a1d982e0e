"""The promotion gate as a pure function: every rule, with the numbers it logs."""

from __future__ import annotations

import math

import pytest

from mlops.gate import decide


def test_first_model_must_beat_the_baseline():
    won = decide(45.0, None, 40.0, tolerance=1.0)
    assert won.promote and won.against == "baseline" and won.reference == 40.0
    assert "first model" in won.reason and "45.00" in won.reason and "40.00" in won.reason
    assert not decide(40.0, None, 40.0, tolerance=1.0).promote  # a tie is not a win
    assert not decide(39.0, None, 40.0, tolerance=5.0).promote  # no tolerance vs the baseline


def test_challenger_within_tolerance_of_the_champion_is_promoted():
    assert decide(50.0, 50.5, 40.0, tolerance=1.0).promote
    assert decide(49.5, 50.5, 40.0, tolerance=1.0).promote  # exactly champion - tolerance
    worse = decide(49.0, 50.5, 40.0, tolerance=1.0)
    assert not worse.promote and worse.against == "champion" and worse.reference == 50.5
    assert worse.reason.startswith("refused: challenger 49.00 < champion 50.50")


@pytest.mark.parametrize("bad", [None, math.nan, math.inf])
def test_failed_evaluation_never_promotes(bad):
    assert not decide(bad, None, 40.0, tolerance=1.0).promote
    assert not decide(bad, 10.0, 40.0, tolerance=100.0).promote
    assert "evaluation failed" in decide(bad, 10.0, 40.0, tolerance=1.0).reason


def test_missing_reference_refuses_and_bad_tolerance_is_an_error():
    assert not decide(50.0, None, None, tolerance=1.0).promote
    with pytest.raises(ValueError, match="tolerance"):
        decide(50.0, 40.0, 30.0, tolerance=-1.0)


def test_the_generality_guard_refuses_a_model_that_forgets():
    from mlops.gate import with_guard

    won = decide(55.0, 50.0, 40.0, tolerance=1.0)
    kept = with_guard(won, guard=39.5, reference=40.0, guard_tolerance=1.0)
    assert kept.promote and "guard 39.50 >= 40.00" in kept.reason
    forgot = with_guard(won, guard=38.0, reference=40.0, guard_tolerance=1.0)
    assert not forgot.promote and forgot.reason.startswith("refused by the generality guard")
    assert forgot.challenger == 55.0 and forgot.reference == 50.0
    assert with_guard(won, None, 40.0, 1.0) is won  # no guard dataset: the decision stands
    lost = decide(40.0, 50.0, 40.0, tolerance=1.0)
    assert with_guard(lost, 60.0, 40.0, 1.0) is lost  # the guard never promotes by itself
    assert not with_guard(won, math.nan, 40.0, 1.0).promote
    with pytest.raises(ValueError, match="guard tolerance"):
        with_guard(won, 40.0, 40.0, -1.0)
