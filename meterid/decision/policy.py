"""What the product answers for each photo, as one typed policy stored with the model.

``DecisionPolicy`` bundles the open-set rule (UNKNOWN or not), the auto-accept rule (trusted
without review) and the conformal prediction sets (the candidates a reviewer picks from). It is
set by ``meterid evaluate`` on held-out data and travels in the model bundle
(``inference.bundle``) to every consumer of the model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from meterid.decision.conformal import NEVER, AcceptRule, PredictionSetRule
from meterid.decision.openset import ModelOutputs, OpenSetRule, Reference


@dataclass(frozen=True)
class Decisions:
    """Per photo: the open-set score, UNKNOWN or not, auto-accepted or not, the prediction set
    (class indices, most probable first)."""

    open_set_scores: np.ndarray
    unknown: np.ndarray
    auto_accepted: np.ndarray
    prediction_sets: list[np.ndarray]


def _never_accept() -> AcceptRule:
    return AcceptRule(NEVER, 0.0, 0.0, False, 1.0, NEVER, 0)


@dataclass(frozen=True)
class DecisionPolicy:
    open_set: OpenSetRule
    accept: AcceptRule  # certified on the colour validation photos
    prediction_sets: PredictionSetRule
    # Certified on the grayscale validation photos alone (a bound does not carry over from
    # colour: on grayscale copies of the demo test photos 30% of the colour rule's picks were
    # wrong); None or uncertified: a grayscale photo keeps its label, top-3 and set, and goes
    # to a reviewer.
    grayscale_accept: AcceptRule | None = None

    def decide(self, outputs: ModelOutputs, reference: Reference) -> Decisions:
        scores = self.open_set.scores(outputs, reference)
        unknown = scores < self.open_set.threshold
        confidence = outputs.probabilities.max(axis=1)
        accepted = self.accept.accepts(confidence, unknown)
        if outputs.grayscale is not None:
            gray_rule = self.grayscale_accept or _never_accept()
            accepted = np.where(outputs.grayscale, gray_rule.accepts(confidence, unknown),
                                accepted)
        return Decisions(scores, unknown, accepted,
                         self.prediction_sets.sets(outputs.probabilities))

    def with_fixed_confidence(self, threshold: float | None) -> DecisionPolicy:
        """The design's rule at ``threshold`` in place of the evaluated open-set rule."""
        if threshold is None:
            return self
        return replace(self, open_set=OpenSetRule.fixed_confidence(threshold))

    def to_dict(self) -> dict:
        """Plain values for reports (the model bundle stores the policy itself)."""
        return asdict(self)

    @classmethod
    def untested(cls, threshold: float = 0.5) -> DecisionPolicy:
        """Before evaluation: the design's fixed confidence, nothing auto-accepted, every label
        in the set (nothing has been measured, so nothing is promised)."""
        return cls(OpenSetRule.fixed_confidence(threshold), _never_accept(),
                   PredictionSetRule(0.0, math.inf, 0))  # every label: covers with p = 1
