"""Choosing the open-set rule on one set of held-out brands and measuring it on another.

Every candidate score gets its threshold from the same stated target: the share of known
validation photos it accepts (``evaluate.known_accept_share``). kNN at ``evaluate.knn_k`` is the
prior; another candidate replaces it only when the *brands* of the selection half say so. Photos
of one brand fail together, so the brand is the unit of evidence: a challenger must flag more
photos than the prior on more selection brands than chance allows (a one-sided sign test over
the brands, Bonferroni over the challengers at ``SWITCH_ALPHA``), and more of the same photos
(a paired McNemar z at the same bar). A photo-level test alone let energy replace kNN on a demo
model (z = 4.6 on the selection half) that then flagged 65% of the report brands against kNN's
96%. With the Bonferroni bar over seven challengers, a switch needs at least 8 selection brands,
so the demo's 4 keep the prior. The figures users can trust are those on the *report* brands,
which took no part in the choice, and on the known test photos, which set no threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm

from meterid.config import EvaluateConfig
from meterid.decision.openset import (
    ModelOutputs,
    OpenSetRule,
    Reference,
    ScoreName,
    known_vs_unknown_auroc,
    open_set_score,
    threshold_for_known_acceptance,
)

KNN_KS = (1, 3, 5, 10, 20)
FIXED = "msp_fixed"
SWITCH_ALPHA = 0.05  # chance that noise replaces the prior, over all challengers together


@dataclass(frozen=True)
class BrandSets:
    """Held-out brands cut in two: one to choose the rule on, one to report it on."""

    selection: tuple[str, ...]
    report: tuple[str, ...]

    @property
    def disjoint(self) -> bool:
        return not set(self.selection) & set(self.report)


def split_brand_sets(brands: list[str] | np.ndarray) -> BrandSets:
    """Alternate the sorted brands between the two sets (deterministic, balanced in count). One
    brand cannot be split: it is both sets, and ``disjoint`` says so."""
    names = sorted(set(map(str, brands)))
    if len(names) < 2:
        return BrandSets(tuple(names), tuple(names))
    return BrandSets(tuple(names[0::2]), tuple(names[1::2]))


@dataclass(frozen=True)
class HeldOut:
    """Model outputs of the held-out-brand photos with each photo's brand."""

    outputs: ModelOutputs
    brands: np.ndarray

    def of(self, names: tuple[str, ...]) -> ModelOutputs:
        return self.outputs.subset(np.isin(self.brands, names))

    def brands_of(self, names: tuple[str, ...]) -> np.ndarray:
        """The brand of each photo of ``of(names)``, in the same order."""
        return self.brands[np.isin(self.brands, names)]


@dataclass(frozen=True)
class OpenSetChoice:
    rule: OpenSetRule
    table: pd.DataFrame          # one row per candidate, the chosen one marked
    brand_sets: BrandSets | None  # None without held-out brands
    selected_by: str


def _groups(known_val: ModelOutputs, known_test: ModelOutputs, held_out: HeldOut | None,
            sets: BrandSets | None) -> dict[str, ModelOutputs]:
    none = known_test.subset(np.zeros(len(known_test), dtype=bool))
    return {"known_val": known_val, "known_test": known_test,
            "selection": held_out.of(sets.selection) if held_out and sets else none,
            "report": held_out.of(sets.report) if held_out and sets else none}


def _candidates(reference: Reference, knn_k: int) -> list[tuple[ScoreName, int]]:
    """(score, k) pairs: the softmax scores always; the embedding scores when the model has its
    training embeddings; kNN at each of ``KNN_KS`` and the configured k."""
    candidates: list[tuple[ScoreName, int]] = [("msp", knn_k), ("energy", knn_k)]
    if len(reference):
        candidates += [("knn", k) for k in sorted({*KNN_KS, knn_k})]
        candidates.append(("mahalanobis", knn_k))
    return candidates


def candidate_rules(known_val: ModelOutputs, reference: Reference, share: float,
                    knn_k: int, known_set: str = "validation") -> dict[str, OpenSetRule]:
    """Each candidate score with the threshold that accepts ``share`` of ``known_val``."""
    rules = {}
    for score, k in _candidates(reference, knn_k):
        values = open_set_score(score, known_val, reference, k)
        rule = OpenSetRule(score, threshold_for_known_acceptance(values, share), k,
                           f"accepts {share:.0%} of {len(values)} known {known_set} photos")
        rules[rule.label] = rule
    return rules


def _row(name: str, rule: OpenSetRule, groups: dict[str, ModelOutputs],
         reference: Reference) -> dict[str, object]:
    scored = {group: rule.scores(outputs, reference) for group, outputs in groups.items()}
    row: dict[str, object] = {"candidate": name, "threshold": rule.threshold}
    for group, values in scored.items():
        row[f"flagged_{group}"] = float((values < rule.threshold).mean()) if len(values) else np.nan
    for group in ("selection", "report"):
        row[f"auroc_{group}"] = known_vs_unknown_auroc(scored["known_test"], scored[group])
    row["selection_flags"] = scored["selection"] < rule.threshold
    return row


def mcnemar_z(challenger: np.ndarray, prior: np.ndarray) -> float:
    """Paired z of "the challenger flags more of the same photos than the prior": only the photos
    the two rules disagree on count (b flagged by the challenger alone, c by the prior alone)."""
    b = int((challenger & ~prior).sum())
    c = int((prior & ~challenger).sum())
    return (b - c) / np.sqrt(b + c) if b + c else 0.0


def switch_z(challengers: int, alpha: float = SWITCH_ALPHA) -> float:
    """One-sided z a challenger must reach, Bonferroni over the challengers tried."""
    return float(norm.isf(alpha / max(challengers, 1)))


@dataclass(frozen=True)
class BrandVote:
    """Selection brands on which a challenger flags a larger (wins) or smaller (losses) share of
    photos than the prior; ties carry no evidence. ``p`` is the one-sided sign test's."""

    wins: int
    losses: int

    @property
    def p(self) -> float:
        if not self.wins + self.losses:
            return 1.0
        return float(binomtest(self.wins, self.wins + self.losses, 0.5,
                               alternative="greater").pvalue)


def brand_vote(challenger: np.ndarray, prior: np.ndarray, brands: np.ndarray) -> BrandVote:
    """Compare the flagged share of the two rules brand by brand."""
    wins = losses = 0
    for brand in np.unique(brands):
        mine, theirs = challenger[brands == brand].mean(), prior[brands == brand].mean()
        wins, losses = wins + int(mine > theirs), losses + int(mine < theirs)
    return BrandVote(wins, losses)


def auto_choice(table: pd.DataFrame, prior: str) -> tuple[str, str]:
    """The prior unless a candidate flags more of the selection photos on more brands, and more
    of the same photos, than chance allows over all the challengers. Of several that clear both
    bars, the one with the largest paired z; when none does, the message names the closest."""
    challengers = table[~table["candidate"].isin([FIXED, prior])]
    alpha, needed = SWITCH_ALPHA / max(len(challengers), 1), switch_z(len(challengers))
    passing = challengers[(challengers["brand_sign_p"] <= alpha)
                          & (challengers["mcnemar_z_vs_prior"] >= needed)]
    if len(passing):
        best = passing.sort_values(["mcnemar_z_vs_prior", "flagged_selection"], ascending=False,
                                   kind="stable").iloc[0]
    else:
        best = challengers.sort_values(["brand_sign_p", "mcnemar_z_vs_prior"],
                                       ascending=[True, False], kind="stable").iloc[0]
    prior_share = table.set_index("candidate").loc[prior, "flagged_selection"]
    versus = (f"{best['candidate']} flags {best['flagged_selection']:.1%} of the selection-brand "
              f"photos, {prior} {prior_share:.1%}; it flags more on {best['brand_wins']} and fewer "
              f"on {best['brand_losses']} brands (sign test p = {best['brand_sign_p']:.3f}, "
              f"needed <= {alpha:.4f}), paired z = {best['mcnemar_z_vs_prior']:.2f} (needed >= "
              f"{needed:.2f})")
    if len(passing):
        return best["candidate"], f"{versus}: it replaces the prior {prior}"
    return prior, f"the prior {prior} kept ({versus})"


def _compare_with_prior(table: pd.DataFrame, prior: str, brands: np.ndarray) -> None:
    """Add each candidate's evidence against the prior on the selection photos: the paired z
    and the brand vote (consumes the ``selection_flags`` column)."""
    prior_flags = table.set_index("candidate").loc[prior, "selection_flags"]
    flags = table.pop("selection_flags")
    votes = [brand_vote(mine, prior_flags, brands) for mine in flags]
    table["mcnemar_z_vs_prior"] = [mcnemar_z(mine, prior_flags) for mine in flags]
    table["brand_wins"] = [vote.wins for vote in votes]
    table["brand_losses"] = [vote.losses for vote in votes]
    table["brand_sign_p"] = [vote.p for vote in votes]


def choose_rule(known_val: ModelOutputs, known_test: ModelOutputs, held_out: HeldOut | None,
                reference: Reference, cfg: EvaluateConfig, known_set: str = "validation"
                ) -> OpenSetChoice:
    """Every candidate at the operating point on known photos and both brand sets, and the
    rule ``cfg`` asks for: ``auto`` is the prior (kNN at ``cfg.knn_k``; max-softmax without
    training embeddings) unless another candidate beats it on the selection brands."""
    sets = split_brand_sets(held_out.brands) if held_out is not None else None
    groups = _groups(known_val, known_test, held_out, sets)
    rules = candidate_rules(known_val, reference, cfg.known_accept_share, cfg.knn_k, known_set)
    rules[FIXED] = OpenSetRule.fixed_confidence(cfg.threshold)
    table = pd.DataFrame([_row(name, rule, groups, reference) for name, rule in rules.items()])
    prior = f"knn(k={cfg.knn_k})" if len(reference) else "msp"
    _compare_with_prior(table, prior, held_out.brands_of(sets.selection) if held_out and sets
                        else np.array([], dtype=str))
    if cfg.operating_point == "fixed_confidence":
        name, how = FIXED, "the design's fixed confidence (evaluate.operating_point)"
    elif cfg.open_set_rule != "auto":
        name = f"knn(k={cfg.knn_k})" if cfg.open_set_rule == "knn" else cfg.open_set_rule
        how = "evaluate.open_set_rule"
        if name not in rules:
            raise ValueError(f"evaluate.open_set_rule {name} is not available for this model "
                             f"(available: {sorted(rules)})")
    elif not len(groups["selection"]):
        name, how = prior, f"no held-out brands to choose on: {prior} by default"
    else:
        name, how = auto_choice(table, prior)
    table["chosen"] = table["candidate"] == name
    return OpenSetChoice(rules[name], table, sets, how)


def choice_metrics(choice: OpenSetChoice) -> dict[str, float]:
    """Flat metrics: the chosen rule's figures and every candidate's AUROC and flagged share."""
    chosen = choice.table[choice.table["chosen"]].iloc[0]
    metrics = {
        "open_set_threshold": float(chosen["threshold"]),
        "known_flagged_share_val": float(chosen["flagged_known_val"]),
        "known_flagged_share": float(chosen["flagged_known_test"]),
        "unknown_flagged_share_selection": float(chosen["flagged_selection"]),
        "unknown_flagged_share_report": float(chosen["flagged_report"]),
        "unknown_auroc_selection": float(chosen["auroc_selection"]),
        "unknown_auroc_report": float(chosen["auroc_report"]),
        "brand_sets_disjoint": float(choice.brand_sets.disjoint) if choice.brand_sets else np.nan,
    }
    for row in choice.table.itertuples():
        key = str(row.candidate).replace("(k=", "").replace(")", "")
        metrics[f"openset_{key}_auroc_report"] = float(row.auroc_report)
        metrics[f"openset_{key}_flagged_report"] = float(row.flagged_report)
        metrics[f"openset_{key}_flagged_selection"] = float(row.flagged_selection)
    return metrics
