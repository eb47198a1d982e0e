"""The promotion gate: does the challenger become the champion?

- The challenger's mIoU must exist (a failed or empty evaluation never promotes). The figure is
  what users get — the served system on the held-back labelled images of the served classes —
  when it was measured, else the benchmark episodes' mIoU.
- With a champion: promote when ``challenger >= champion - tolerance`` (both measured on the
  same episodes; mIoU in percent, tolerance in mIoU points).
- Without one (the first model): promote only when the challenger beats the prototype
  baseline measured on the same episodes (strictly greater).
- The generality guard (:func:`with_guard`): a challenger that gains on its classes but whose
  few-shot mIoU on a dataset it never trains on falls more than ``guard_tolerance`` below the
  reference's (the champion's, else the prototype's) is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """The gate's verdict, with the numbers it compared."""

    promote: bool
    reason: str
    challenger: float | None
    reference: float | None  # the champion's mIoU, else the baseline's
    against: str  # "champion" | "baseline"


def decide(challenger: float | None, champion: float | None, baseline: float | None,
           tolerance: float) -> Decision:
    """Apply the gate (see the module docstring)."""
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance must be a non-negative number, got {tolerance}")
    reference: float | None
    if champion is not None:
        against, reference = "champion", champion
    else:
        against, reference = "baseline", baseline
    if challenger is None or not math.isfinite(challenger):
        return Decision(False, "evaluation failed: no validation mIoU", challenger, reference,
                        against)
    if reference is None or not math.isfinite(reference):
        return Decision(False, f"no {against} mIoU to compare with", challenger, reference,
                        against)
    if against == "champion":
        ok = challenger >= reference - tolerance
        verdict = ">=" if ok else "<"
        reason = (f"challenger {challenger:.2f} {verdict} champion {reference:.2f} - tolerance "
                  f"{tolerance:g}")
    else:
        ok = challenger > reference
        verdict = ">" if ok else "<="
        reason = f"first model: challenger {challenger:.2f} {verdict} prototype {reference:.2f}"
    return Decision(ok, ("promoted: " if ok else "refused: ") + reason, challenger, reference,
                    against)


def with_guard(decision: Decision, guard: float | None, reference: float | None,
               guard_tolerance: float) -> Decision:  # fmt: skip
    """``decision``, refused when the guard fails (see the module docstring); unchanged when
    the guard was not measured (no guard dataset configured)."""
    if guard_tolerance < 0 or not math.isfinite(guard_tolerance):
        raise ValueError(f"guard tolerance must be a non-negative number, got {guard_tolerance}")
    if guard is None or reference is None or not decision.promote:
        return decision
    if not math.isfinite(guard) or guard < reference - guard_tolerance:
        reason = (f"refused by the generality guard: {guard:.2f} < {reference:.2f} - tolerance "
                  f"{guard_tolerance:g} (was: {decision.reason})")
        return Decision(False, reason, decision.challenger, decision.reference, decision.against)
    reason = f"{decision.reason}; guard {guard:.2f} >= {reference:.2f} - {guard_tolerance:g}"
    return Decision(True, reason, decision.challenger, decision.reference, decision.against)
