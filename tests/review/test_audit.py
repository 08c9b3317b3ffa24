"""The field audit of auto-accept: certified bound, its coverage, and the stop/resume loop."""

from __future__ import annotations

import numpy as np

from meterid.decision.conformal import error_upper_bound
from meterid.review.audit import audit_verdict, audits_to_certify

MAX_ERROR, CONFIDENCE, WINDOW = 0.02, 0.9, 500


def test_the_fewest_audits_that_can_certify_the_target():
    needed = audits_to_certify(MAX_ERROR, CONFIDENCE)
    assert needed == 114
    assert error_upper_bound(0, needed, CONFIDENCE) <= MAX_ERROR
    assert error_upper_bound(0, needed - 1, CONFIDENCE) > MAX_ERROR


def test_the_bound_covers_the_true_field_error():
    """Over synthetic audit windows with a known error rate, the upper bound falls under the
    true rate in at most 1 - confidence of them (Clopper-Pearson is conservative)."""
    rng = np.random.default_rng(0)
    for rate, n in ((0.01, 300), (0.05, 200), (0.2, 60)):
        errors = rng.binomial(n, rate, size=4000)
        under = np.mean([error_upper_bound(int(e), n, CONFIDENCE) < rate for e in errors])
        assert under <= 1 - CONFIDENCE, (rate, n, under)


def test_a_model_wrong_in_the_field_is_stopped_then_resumes_after_correct_audits():
    """Auto-accepted photos wrong 1 time in 10 (two classes' labels swapped): stopped as soon
    as enough audits exist to judge, kept stopped while the errors go on, resumed once the
    window holds only correct audits."""
    audits = [i % 10 == 0 for i in range(300)]
    verdicts = [audit_verdict(audits[:n], MAX_ERROR, CONFIDENCE, WINDOW) for n in range(301)]
    stopped_at = next(n for n, verdict in enumerate(verdicts) if not verdict.auto_accept)
    assert stopped_at == audits_to_certify(MAX_ERROR, CONFIDENCE)  # the first judgeable run
    assert all(verdict.auto_accept for verdict in verdicts[:stopped_at])  # certificate stands
    assert "validation certificate stands" in verdicts[10].reason
    assert not any(verdict.auto_accept for verdict in verdicts[stopped_at:])
    assert "auto-accept stops" in verdicts[-1].reason and verdicts[-1].wrong == 30

    fixed = audits + [False] * 100
    assert not audit_verdict(fixed, MAX_ERROR, CONFIDENCE, WINDOW).auto_accept
    resumed = audit_verdict(audits + [False] * WINDOW, MAX_ERROR, CONFIDENCE, WINDOW)
    assert resumed.auto_accept and resumed.wrong == 0 and resumed.audited == WINDOW
    assert "auto-accept runs" in resumed.reason


def test_a_model_right_in_the_field_keeps_auto_accepting():
    verdict = audit_verdict([False] * 400, MAX_ERROR, CONFIDENCE, WINDOW)
    assert verdict.auto_accept and verdict.bound <= MAX_ERROR
