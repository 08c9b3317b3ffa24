"""The decision policy's pure logic: an operating point from a stated target, the open-set rule
chosen on one brand set and reported on another, the certified accept bound and the conformal
sets on synthetic scores with known error rates, and non-meter scenes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import TypeAdapter

from meterid.config import EvaluateConfig
from meterid.data.demo.scenes import KINDS, non_meter_scenes
from meterid.decision.conformal import (
    NEVER,
    certify_accept_threshold,
    fit_prediction_sets,
    set_coverage,
)
from meterid.decision.openset import (
    ModelOutputs,
    Reference,
    knn_score,
    open_set_score,
    threshold_for_known_acceptance,
)
from meterid.evaluation.operating_point import (
    FIXED,
    HeldOut,
    auto_choice,
    brand_vote,
    choose_rule,
    mcnemar_z,
    split_brand_sets,
    switch_z,
)
from meterid.inference.quality import measure_quality, quality_issues

DIM, CLASSES = 16, 4


def _cfg(**overrides: object) -> EvaluateConfig:
    values = {"operating_point": "known_accept_share", "open_set_rule": "auto", "knn_k": 5,
              "known_accept_share": 0.95, "threshold": 0.5, "max_accept_error": 0.02,
              "accept_confidence": 0.9, "prediction_set_alpha": 0.05,
              "prediction_set_alpha_out_of_fold": 0.02, "non_meter_scenes": 0,
              "cv_folds": 5, "suspect_filter": "prune_by_noise_rate",
              "int8": {"enabled": False, "form": "u8s8", "calibration_photos": 1,
                       "min_agreement": 0.98}}
    return EvaluateConfig(**{**values, **overrides})


@pytest.mark.parametrize("share", [0.8, 0.95, 0.99])
def test_the_threshold_accepts_the_stated_share_of_known_photos(share: float):
    scores = np.random.default_rng(0).normal(size=2000)
    threshold = threshold_for_known_acceptance(scores, share)
    assert (scores >= threshold).mean() == pytest.approx(share, abs=1e-3)
    # ties at the threshold are accepted, never pushed under it
    assert (np.r_[np.zeros(10), np.ones(10)] >= threshold_for_known_acceptance(
        np.r_[np.zeros(10), np.ones(10)], 0.95)).all()


def test_brand_sets_are_disjoint_and_say_when_they_cannot_be():
    sets = split_brand_sets(["d", "a", "c", "b", "a"])
    assert (sets.selection, sets.report, sets.disjoint) == (("a", "c"), ("b", "d"), True)
    assert not split_brand_sets(["only"]).disjoint


def _world(rng: np.random.Generator, n: int, centres: np.ndarray, spread: float
           ) -> tuple[ModelOutputs, np.ndarray]:
    labels = rng.integers(len(centres), size=n)
    embeddings = centres[labels] + spread * rng.normal(size=(n, DIM))
    logits = embeddings[:, :CLASSES] * 4.0  # the head reads the first CLASSES dimensions
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return ModelOutputs(logits, probabilities, embeddings.astype(np.float32)), labels


def test_the_rule_is_chosen_on_the_selection_brands_and_reported_on_the_others():
    rng = np.random.default_rng(1)
    known = np.eye(DIM)[:CLASSES] * 3
    train, train_labels = _world(rng, 400, known, 0.3)
    val, _ = _world(rng, 200, known, 0.3)
    test, _ = _world(rng, 200, known, 0.3)
    # unseen brands: far from the training images in embedding space, but the head (first
    # CLASSES dimensions) is just as sure of them as of known photos: MSP cannot see them
    brands = np.eye(DIM)[CLASSES:CLASSES + 4] * 3 + known[[0, 1, 2, 3]]
    unseen, brand_index = _world(rng, 160, brands, 0.3)
    held_out = HeldOut(unseen, np.array([f"brand{i}" for i in brand_index]))
    choice = choose_rule(val, test, held_out, Reference(train.embeddings, train_labels), _cfg())
    chosen = choice.table[choice.table["chosen"]].iloc[0]
    assert choice.rule.score in ("knn", "mahalanobis")
    assert choice.brand_sets.selection == ("brand0", "brand2") and choice.brand_sets.disjoint
    assert chosen["flagged_known_val"] <= 0.05 + 1e-9
    assert chosen["flagged_report"] > 0.9 and chosen["flagged_known_test"] < 0.1
    msp = choice.table.set_index("candidate").loc["msp"]
    assert msp["flagged_report"] < 0.3  # what the old 0.5-style rule would have missed
    fixed = _cfg(operating_point="fixed_confidence", threshold=0.4)
    assert choose_rule(val, test, held_out, Reference(train.embeddings, train_labels),
                       fixed).rule.threshold == 0.4
    assert "no held-out brands" in choose_rule(
        val, test, None, Reference(train.embeddings, train_labels), _cfg()).selected_by


def test_the_paired_test_counts_only_the_photos_the_rules_disagree_on():
    prior = np.array([True] * 40 + [False] * 10)
    assert mcnemar_z(prior, prior) == 0.0
    three_more = prior.copy()
    three_more[40:43] = True
    assert mcnemar_z(three_more, prior) == pytest.approx(np.sqrt(3))  # b = 3, c = 0
    assert mcnemar_z(prior, three_more) == pytest.approx(-np.sqrt(3))
    # 3 more of 50 photos is chance over 9 challengers; 12 more is not
    assert np.sqrt(3) < switch_z(9) < np.sqrt(12)
    assert switch_z(1) == pytest.approx(1.645, abs=1e-3) and switch_z(9) > switch_z(1)


def _flat_logits_world(rng: np.random.Generator, n: int, known: np.ndarray) -> ModelOutputs:
    """Photos whose embeddings sit on known classes but whose head is undecided: kNN cannot
    see them, max-softmax can."""
    outputs, _ = _world(rng, n, known, 0.3)
    flat = np.zeros_like(outputs.logits)
    return ModelOutputs(flat, np.full_like(outputs.probabilities, 1 / CLASSES),
                        outputs.embeddings)


def test_the_knn_prior_is_kept_unless_a_challenger_clearly_flags_more():
    rng = np.random.default_rng(2)
    known = np.eye(DIM)[:CLASSES] * 3
    train, train_labels = _world(rng, 400, known, 0.3)
    reference = Reference(train.embeddings, train_labels)
    val, _ = _world(rng, 200, known, 0.3)
    test, _ = _world(rng, 200, known, 0.3)
    far = np.eye(DIM)[CLASSES:CLASSES + 4] * 3 + known
    seen, seen_brands = _world(rng, 160, far, 0.3)
    kept = choose_rule(val, test, HeldOut(seen, np.array([f"b{i}" for i in seen_brands])),
                       reference, _cfg())
    assert kept.rule.label == "knn(k=5)" and kept.selected_by.startswith("the prior knn(k=5)")
    hidden = _flat_logits_world(rng, 320, known)
    # four brands: two a half, and a challenger winning on both is chance (p = 0.25)
    few = choose_rule(val, test, HeldOut(hidden, np.array([f"b{i}" for i in
                                                           rng.integers(4, size=320)])),
                      reference, _cfg())
    assert few.rule.label == "knn(k=5)" and few.selected_by.startswith("the prior knn(k=5)")
    best = few.table.sort_values("brand_sign_p").iloc[0]
    assert best["mcnemar_z_vs_prior"] >= switch_z(len(few.table) - 2)  # photos alone would switch
    # sixteen brands: eight a half, all won, p = 1/256 clears 5% over seven challengers
    brands = np.array([f"b{i:02d}" for i in rng.integers(16, size=320)])
    switched = choose_rule(val, test, HeldOut(hidden, brands), reference, _cfg())
    assert switched.rule.score in ("msp", "energy") and "replaces the prior" in switched.selected_by
    chosen = switched.table[switched.table["chosen"]].iloc[0]
    assert (chosen["brand_wins"], chosen["brand_losses"]) == (8, 0)
    assert chosen["mcnemar_z_vs_prior"] >= switch_z(len(switched.table) - 2)
    assert chosen["flagged_report"] > 0.9  # the report half agrees with the switch


def test_the_brand_vote_counts_brands_not_photos():
    brands = np.array(["a"] * 90 + ["b"] * 5 + ["c"] * 5)
    prior = np.zeros(100, dtype=bool)
    challenger = prior.copy()
    challenger[:90] = True  # 90 more photos, all of one brand
    challenger[90] = True   # and one of brand b; brand c ties
    vote = brand_vote(challenger, prior, brands)
    assert (vote.wins, vote.losses) == (2, 0) and vote.p == pytest.approx(0.25)
    assert brand_vote(prior, challenger, brands).p == 1.0
    assert brand_vote(prior, prior, brands).p == 1.0  # only ties: no evidence


def test_a_challenger_must_clear_both_bars_and_the_best_that_does_is_chosen():
    prior = "knn(k=5)"
    rows = [  # candidate, flagged on the selection photos, paired z, sign-test p over brands
        (prior, 0.60, 0.0, 1.0),
        ("msp", 0.95, 1.0, 0.001),        # more brands, but not more of the same photos
        ("energy", 0.80, 3.0, 0.004),     # both bars (p <= 0.05 / 3, z >= 2.13)
        ("mahalanobis", 0.99, 6.0, 0.2),  # many photos of a few brands
        (FIXED, 0.10, -5.0, 1.0),
    ]
    table = pd.DataFrame(rows, columns=["candidate", "flagged_selection", "mcnemar_z_vs_prior",
                                        "brand_sign_p"]).assign(brand_wins=8, brand_losses=0)
    name, how = auto_choice(table, prior)
    assert name == "energy" and "replaces the prior" in how
    kept, why = auto_choice(table[table["candidate"] != "energy"], prior)
    assert kept == prior and why.startswith(f"the prior {prior} kept (msp")  # the closest named


def test_relative_mahalanobis_flags_a_photo_between_two_classes_first():
    """A new variant of a known brand lies between known classes. Plain Mahalanobis finds it as
    far from its nearest class as a photo displaced the same way away from every class; the
    relative score (less the distance to all training photos) flags the one between them."""
    rng = np.random.default_rng(0)
    shared = np.r_[10.0, np.zeros(15)]  # a component every photo has
    means = [shared + np.r_[0.0, side, np.zeros(14)] for side in (1.0, -1.0)]
    train = np.concatenate([m + 0.1 * rng.standard_normal((200, 16)) for m in means])
    reference = Reference(train.astype(np.float32), np.repeat([0, 1], 200))
    between = (means[0] + means[1]) / 2
    queries = np.stack([means[0], between, 2 * means[0] - between]).astype(np.float32)
    at_class, mid, away = reference.mahalanobis_score(queries)
    assert at_class > mid and mid == pytest.approx(away, rel=0.01)
    at_class, mid, away = reference.relative_mahalanobis_score(queries)
    assert at_class > mid and away > mid + 50
    logits = np.array([[2.0, 0.5], [0.1, 0.3]])
    assert open_set_score("max_logit", ModelOutputs(logits, logits, logits), Reference(
        np.empty((0, 2)), np.empty(0))).tolist() == [2.0, 0.3]  # needs no reference


def test_knn_score_leave_one_out_and_reference_needed():
    reference = np.eye(3, dtype=np.float32)
    assert knn_score(reference, reference, 1).tolist() == [0.0, 0.0, 0.0]
    assert knn_score(reference, reference, 1, exclude_self=True).tolist() == [-1.0, -1.0, -1.0]


def _accept_world(rng: np.random.Generator, n: int, slope: float = 0.3):
    """Confidences uniform in [0.5, 1), the error rate ``slope * (1 - confidence)``: photos
    accepted above t err at ``slope * (1 - t) / 2`` (0.3: 2% at t = 0.867)."""
    confidence = rng.uniform(0.5, 1.0, n)
    return confidence, rng.random(n) >= slope * (1 - confidence)


def test_accept_bound_holds_on_fresh_data_with_the_stated_confidence():
    rng = np.random.default_rng(2)
    grid = (0.8, 0.85, 0.9, 0.95)  # 0.85 errs at 2.25%, over the target: must be rare
    violations, certified = 0, 0
    for _ in range(200):
        confidence, correct = _accept_world(rng, 20000)
        rule = certify_accept_threshold(confidence, correct, np.ones(20000, bool), 0.02, 0.1,
                                        grid)
        if rule.certified:
            certified += 1
            violations += 0.3 * (1 - rule.threshold) / 2 > 0.02  # the true error, exactly
    assert certified > 150  # the target is reachable: certified nearly always
    assert violations / certified <= 0.1


def test_an_uncertifiable_target_accepts_nothing_and_names_the_bound_it_can():
    rng = np.random.default_rng(3)
    confidence, correct = _accept_world(rng, 250, slope=0.02)
    rule = certify_accept_threshold(confidence, correct, np.ones(250, bool), 0.005, 0.1)
    assert not rule.certified and rule.threshold == NEVER
    assert not rule.accepts(confidence, np.zeros(250, bool)).any()
    assert 0.005 < rule.best_bound < 0.2
    # the bound it names is one it could certify
    assert certify_accept_threshold(confidence, correct, np.ones(250, bool),
                                    rule.best_bound + 1e-3, 0.1).certified


def test_prediction_sets_cover_at_least_one_minus_alpha_and_are_never_empty():
    rng = np.random.default_rng(4)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        logits = rng.normal(size=(n, 6)) * 2
        probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        truth = np.array([rng.choice(6, p=p) for p in probabilities])  # calibrated by design
        return probabilities, truth

    probabilities, truth = draw(1000)
    rule = fit_prediction_sets(probabilities, truth, alpha=0.1)
    fresh, fresh_truth = draw(5000)
    sets = rule.sets(fresh)
    coverage, size = set_coverage(sets, fresh_truth)
    assert coverage >= 0.88 and 1 < size < 6
    assert min(len(s) for s in sets) == 1
    assert fit_prediction_sets(probabilities[:0], truth[:0], alpha=0.1).quantile == np.inf


def test_prediction_set_threshold_is_the_conformal_order_statistic_not_the_next():
    # 9 photos at alpha 0.2: the ceil(10 * 0.8) = 8th smallest score of 1 - p(truth)
    true_probability = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.3, 0.01])
    probabilities = np.column_stack([true_probability, 1 - true_probability])
    rule = fit_prediction_sets(probabilities, np.zeros(9, int), alpha=0.2)
    assert rule.quantile == pytest.approx(0.7)  # not the worst photo's 0.99
    assert [len(s) for s in rule.sets(np.array([[0.35, 0.65], [0.2, 0.8]]))] == [2, 1]
    at_limit = fit_prediction_sets(probabilities, np.zeros(9, int), alpha=0.1)  # 1 / (9 + 1)
    assert at_limit.quantile == pytest.approx(0.99)  # the 9th smallest: the worst photo


def test_too_few_calibration_photos_give_the_smallest_alpha_they_certify_and_say_so():
    rng = np.random.default_rng(5)
    probabilities = rng.dirichlet(np.full(27, 0.05), size=84)  # confident, mostly right
    truth = probabilities.argmax(axis=1)
    truth[:2] = (truth[:2] + 1) % 27  # two photos whose label the model barely gives
    rule = fit_prediction_sets(probabilities, truth, alpha=0.01)  # 0.01 needs 99 photos
    assert rule.requested_alpha == 0.01 and rule.alpha == pytest.approx(1 / 85)
    assert "84 calibration photos" in rule.reason and "needs 99" in rule.reason
    assert np.isfinite(rule.quantile)  # not every label
    enough = fit_prediction_sets(probabilities, truth, alpha=0.05)
    assert enough.alpha == enough.requested_alpha == 0.05 and enough.reason == ""
    assert np.mean([len(s) for s in enough.sets(probabilities)]) < 27


def test_non_meter_scenes_are_each_kind_and_blank_or_black_fail_the_quality_gate(params):
    scenes = list(non_meter_scenes(10, seed=0, size=(120, 160)))
    assert [kind for kind, _ in scenes] == list(KINDS) * 2
    for kind, image in scenes:
        assert image.size == (120, 160) and image.mode == "RGB"
        poor = bool(quality_issues(measure_quality(image), params.score.quality))
        assert poor == (kind in ("blank", "black")), kind


def test_a_field_case_reports_the_errors_among_labelled_and_auto_accepted_photos():
    from meterid.decision.conformal import AcceptRule, PredictionSetRule
    from meterid.decision.openset import OpenSetRule
    from meterid.decision.policy import DecisionPolicy
    from meterid.evaluation.evaluate import EvaluationData, _field_metrics

    # 4 grayscale photos of class 0: very sure and right, fairly sure and right, very sure and
    # wrong, unsure and wrong. MSP at 0.6 flags the unsure one, so 1 of the 3 labelled is
    # wrong; auto-accept at 0.85 takes the two very sure ones, and 1 of those 2 is wrong.
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.45, 0.55]])
    outputs = ModelOutputs(np.log(probabilities), probabilities, np.zeros((4, 2)))
    data = EvaluationData(outputs, np.zeros(4, int), outputs, np.zeros(4, int), [], None,
                          field_cases={"grayscale": outputs})
    no_reference = Reference(np.zeros((0, 2)), np.zeros(0, int))

    def policy(unknown_below: float, accept_from: float) -> DecisionPolicy:
        return DecisionPolicy(OpenSetRule("msp", unknown_below),
                              AcceptRule(accept_from, 0.02, 0.1, True, 0.02, accept_from, 100),
                              PredictionSetRule(0.01, 0.5, 100))

    metrics = _field_metrics(policy(0.6, 0.85), data, no_reference, 1.0)
    assert metrics["field_grayscale_accuracy"] == pytest.approx(0.5)
    assert metrics["field_grayscale_unknown_share"] == pytest.approx(0.25)
    assert metrics["field_grayscale_accepted_error"] == pytest.approx(1 / 3)
    assert metrics["field_grayscale_auto_accept_share"] == pytest.approx(0.5)
    assert metrics["field_grayscale_auto_accepted_error"] == pytest.approx(0.5)
    nothing_through = _field_metrics(policy(0.99, 0.995), data, no_reference, 1.0)
    assert np.isnan(nothing_through["field_grayscale_accepted_error"])
    assert np.isnan(nothing_through["field_grayscale_auto_accepted_error"])


def test_grayscale_photos_are_certified_apart_from_colour_ones():
    from meterid.decision.openset import OpenSetRule
    from meterid.decision.policy import DecisionPolicy
    from meterid.evaluation.evaluate import EvaluationData, _accept_and_sets

    # 400 colour validation photos, all right at 0.99; 400 grayscale ones at 0.99, a fifth of
    # them wrong. Certified together (as before) the 10% error would pass nobody's 2% bound.
    n = 400
    probabilities = np.tile([[0.99, 0.01]], (2 * n, 1))
    targets = np.zeros(2 * n, int)
    targets[n::5] = 1  # every fifth grayscale photo is of the other class
    gray = np.r_[np.zeros(n, bool), np.ones(n, bool)]
    outputs = ModelOutputs(np.log(probabilities), probabilities, np.zeros((2 * n, 2)),
                           grayscale=gray)
    data = EvaluationData(outputs, targets, outputs, targets, [], None)
    cfg = _cfg(max_accept_error=0.02, accept_confidence=0.9)
    no_reference = Reference(np.zeros((0, 2)), np.zeros(0, int))
    accept, sets, gray_accept = _accept_and_sets(OpenSetRule("msp", 0.5), data, no_reference, cfg)
    assert accept.certified and accept.calibration_photos == n
    assert not gray_accept.certified and gray_accept.calibration_photos == n
    policy = DecisionPolicy(OpenSetRule("msp", 0.5), accept, sets, gray_accept)
    decided = policy.decide(outputs, no_reference)
    assert decided.auto_accepted[:n].all() and not decided.auto_accepted[n:].any()
    # an infrared-only collection: its grayscale photos earn their own bound
    right = EvaluationData(outputs, np.zeros(2 * n, int), outputs, np.zeros(2 * n, int), [], None)
    _, _, earned = _accept_and_sets(OpenSetRule("msp", 0.5), right, no_reference, cfg)
    assert earned.certified
    both = DecisionPolicy(OpenSetRule("msp", 0.5), accept, sets, earned)
    assert both.decide(outputs, no_reference).auto_accepted.all()
    # read back as the model bundle reads it; a policy stored before the field existed has none
    stored = TypeAdapter(DecisionPolicy)
    assert stored.validate_python(both.to_dict()) == both
    older = stored.validate_python({k: v for k, v in both.to_dict().items()
                                    if k != "grayscale_accept"})
    assert older.grayscale_accept is None
    assert not older.decide(outputs, no_reference).auto_accepted[n:].any()


def test_out_of_fold_photos_set_the_accept_bound_and_sets_when_training_made_them():
    """A collection without validation: 20 test photos would certify nothing (and are the
    photos the report measures); 600 out-of-fold training photos, all right and sure, do, with
    the sets asked for the out-of-fold alpha (those photos are easier than new ones)."""
    from meterid.decision.openset import OpenSetRule
    from meterid.evaluation.evaluate import (
        EvaluationData,
        OutOfFoldOutputs,
        _accept_and_sets,
        certification_photos,
    )

    test = np.tile([[0.97, 0.03]], (20, 1))
    outputs = ModelOutputs(np.log(test), test, np.zeros((20, 2)))
    oof = OutOfFoldOutputs(np.tile([[0.98, 0.02]], (600, 1)), np.zeros(600, int))
    no_reference = Reference(np.zeros((0, 2)), np.zeros(0, int))
    cfg = _cfg(max_accept_error=0.02, accept_confidence=0.9)
    rule = OpenSetRule("msp", 0.99)  # would flag every test photo: out-of-fold ones all count
    on_test = EvaluationData(outputs, np.zeros(20, int), outputs, np.zeros(20, int), [], None,
                             threshold_set="test")
    with_oof = EvaluationData(outputs, np.zeros(20, int), outputs, np.zeros(20, int), [], None,
                              threshold_set="test", out_of_fold=oof)
    assert certification_photos(rule, on_test, no_reference).name == "test"
    photos = certification_photos(rule, with_oof, no_reference)
    assert photos.name == "out-of-fold" and photos.kept.all() and not photos.grayscale.any()
    accept, sets, gray_accept = _accept_and_sets(rule, with_oof, no_reference, cfg)
    assert accept.certified and accept.calibration_photos == 600 and gray_accept is None
    assert sets.calibration_photos == 600 and sets.alpha == pytest.approx(0.02)
    test_accept, test_sets, _ = _accept_and_sets(rule, on_test, no_reference, cfg)
    assert not test_accept.certified
    assert test_sets.calibration_photos == 20 and test_sets.requested_alpha == pytest.approx(0.05)
