"""What reviewers' labels say of a model in the field: its top-1 accuracy on the photos they
labelled, per class, and the confusion of the product's decisions against them.

The reviewed photos are those scoring sent to a person (the unsure ones, and a random audit
sample of the auto-accepted ones), so the figure is the model on its hardest field photos, not
on the field at large; a photo counts once reviewers agree it is a known class.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from meterid.review.store import LabelStore


@dataclass(frozen=True)
class FieldReport:
    reviewed: int               # photos reviewers agree are a known class
    correct: int                # of which the model's top-1 was that class
    per_class: pd.DataFrame     # class, reviewed, correct, recall
    confusion: pd.DataFrame     # the reviewers' class (rows) x the product's label (columns)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.reviewed if self.reviewed else None


def field_report(store: LabelStore, model_version: int | None, classes: list[str]
                 ) -> FieldReport:
    """``model_version``'s field figures over the reviewed photos of a known class (new types,
    non-meters and unreadable photos have no right class to count)."""
    rows = pd.DataFrame([row for row in store.reviewed(model_version) if row[2] in classes],
                        columns=["said", "top1", "truth"])
    rows["correct"] = rows["top1"] == rows["truth"]
    per_class = (rows.groupby("truth")["correct"].agg(reviewed="size", correct="sum")
                 .reset_index().rename(columns={"truth": "class"}))
    per_class["correct"] = per_class["correct"].astype(int)
    per_class["recall"] = per_class["correct"] / per_class["reviewed"]
    confusion = pd.crosstab(rows["truth"], rows["said"]).rename_axis(
        index="reviewers", columns="product")
    return FieldReport(len(rows), int(rows["correct"].sum()), per_class, confusion)
