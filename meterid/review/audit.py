"""The field audit of auto-accept: reviewers label a random sample of the photos the product
auto-accepted, without knowing they were; the share of those it got wrong, bounded above
(one-sided Clopper-Pearson at ``evaluate.accept_confidence``, over the last
``review.audit_window`` audits of one model version), says whether the validation photos'
certificate (``evaluate.max_accept_error``) still holds in the field.

Until enough audits could certify the target at all (``audits_to_certify``: with no error,
114 audits certify 2% at 90%), the validation certificate stands: a new model is not stopped for
lack of evidence. From then on auto-accept runs only while the bound is at most the target; it
stops on the next scoring run when it is not, and resumes once enough correct audits bring the
bound back under it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from meterid.decision.conformal import error_upper_bound


@dataclass(frozen=True)
class AuditVerdict:
    """Whether the next scoring run may auto-accept, and why."""

    auto_accept: bool
    audited: int        # audits in the window
    wrong: int          # of which the reviewers' label differs from the product's
    bound: float        # upper bound of the field error (1.0 with no audit)
    max_error: float
    confidence: float
    reason: str


def audits_to_certify(max_error: float, confidence: float) -> int:
    """The fewest audits, all correct, whose upper bound is at most ``max_error``."""
    return math.ceil(math.log(1 - confidence) / math.log(1 - max_error))


def audit_verdict(wrong_flags: Sequence[bool], max_error: float, confidence: float,
                  window: int) -> AuditVerdict:
    """The verdict on a model version's audits (oldest first; True: the product's label was
    wrong), over the last ``window`` of them."""
    recent = list(wrong_flags)[-window:]
    n, wrong = len(recent), int(sum(recent))
    bound = error_upper_bound(wrong, n, confidence)
    needed = audits_to_certify(max_error, confidence)
    if n < needed and bound > max_error:
        return AuditVerdict(True, n, wrong, bound, max_error, confidence,
                            f"{n} field audits, {wrong} wrong: fewer than the {needed} that can "
                            f"certify {max_error:.1%}; the validation certificate stands")
    holds = bound <= max_error
    said = (f"{wrong} of {n} audited auto-accepted photos wrong: field error <= {bound:.2%} "
            f"at {confidence:.0%} confidence")
    return AuditVerdict(holds, n, wrong, bound, max_error, confidence,
                        f"{said}, within {max_error:.1%}: auto-accept runs" if holds else
                        f"{said}, above {max_error:.1%}: auto-accept stops, every photo goes "
                        "to a person until correct audits certify it again")



def uncertified_reason(version: dict, max_error: float) -> str | None:
    """Why a registered ``version`` (``registry.list_versions``'s row) auto-accepts nothing,
    or None when its evaluation certified an accept threshold. Without one there is no
    auto-accepted photo for the field audit to judge."""
    if version.get("auto_accept_certified") != 0.0:
        return None
    best = version.get("auto_accept_certifiable_error")
    could = (f"could certify an error of {best:.1%} at best" if best is not None
             else "could certify no error")
    target = version.get("auto_accept_target_error", max_error)
    return (f"Auto-accept off for version {version['version']}: its evaluation {could}, above "
            f"the {target:.1%} target (too few calibration photos), so every photo goes to a "
            "person. The field audit starts with a version that auto-accepts.")
