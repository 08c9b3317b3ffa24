"""The label store on SQLite and on PostgreSQL: a run's queue lands once,
verdicts are checked, a reviewer replaces only their own, disagreement is a conflict, and the
audited photos of a model version give the field audit its wrong/right flags."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from meterid.core import OK, UNKNOWN, ScoredRow
from meterid.review.field import field_report
from meterid.review.queue import review_queue
from meterid.review.store import NEW_TYPE, LabelStore, ReviewError
from tests.postgres import PostgresServer, throwaway_postgres

CLASSES = ["a", "b"]


def _scored(run_version: int = 3) -> pd.DataFrame:
    rows = [ScoredRow(i, f"http://x/{i}.jpg", OK, label="a", auto_accepted=True,
                      top1_label="a", top2_label="b", prediction_set=["a"],
                      sha256=f"{i:064x}", model_version=run_version) for i in range(10)]
    rows.append(ScoredRow(10, "http://x/u.jpg", OK, label=UNKNOWN, is_unknown=True,
                          auto_accepted=False, top1_label="b", prediction_set=["b", "a"],
                          open_set_score=-0.4, sha256="f" * 64, model_version=run_version))
    return pd.DataFrame([row.to_dict() for row in rows])


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    with throwaway_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test on SQLite (the default store) and on PostgreSQL (the stack's), a fresh
    database each."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"review_{uuid.uuid4().hex[:10]}"
    server.create_database(name)
    return server.url(name, driver="psycopg2")


def test_a_run_queue_lands_once_and_keeps_what_the_product_said(store_url: str):
    store = LabelStore(store_url)
    queue = review_queue(_scored(), "run-1", share=0.1, floor=3)
    assert store.enqueue("run-1", queue) == 4 and store.enqueue("run-1", queue) == 0
    queued = store.queue("run-1")
    assert [q.sha256 for q in queued] == list(queue["sha256"])
    unknown = next(q for q in queued if q.label == UNKNOWN)
    assert unknown.prediction_set == ["b", "a"] and unknown.open_set_score == -0.4
    assert unknown.top_labels == ["b"] and unknown.model_version == 3
    assert LabelStore(store_url).queue("run-1")[0].url == queued[0].url  # reopened


def test_verdicts_are_checked_and_a_reviewer_replaces_only_their_own(store_url: str):
    store = LabelStore(store_url)
    store.enqueue("run-1", review_queue(_scored(), "run-1", 0.1, 3))
    photo = "f" * 64
    with pytest.raises(ReviewError, match="neither a class of the model"):
        store.label(photo, "ana", "c", CLASSES)
    with pytest.raises(ReviewError, match="in no review queue"):
        store.label("0" * 64 + "x", "ana", "a", CLASSES)
    with pytest.raises(ReviewError, match="reviewer's name"):
        store.label(photo, " ", "a", CLASSES)
    store.label(photo, "ana", "a", CLASSES)
    store.label(photo, "ana", NEW_TYPE, CLASSES)  # ana changes her mind
    assert store.verdicts(photo) == {"ana": NEW_TYPE} and store.conflicts() == []
    assert photo not in {q.sha256 for q in store.queue(reviewer="ana")}
    store.label(photo, "ben", "b", CLASSES)
    [conflict] = store.conflicts()
    assert conflict.sha256 == photo and conflict.verdicts == {"ana": NEW_TYPE, "ben": "b"}
    assert photo not in store.agreed()
    store.label(photo, "ben", NEW_TYPE, CLASSES)
    assert store.conflicts() == [] and store.agreed()[photo] == NEW_TYPE


def test_audits_flag_where_the_product_was_wrong(store_url: str):
    store = LabelStore(store_url)
    queue = review_queue(_scored(), "run-1", share=0.5, floor=0)
    store.enqueue("run-1", queue)
    audited = list(queue.loc[queue["reason"] == "audit", "sha256"])
    assert len(audited) == 5
    for i, photo in enumerate(audited):  # the product said "a": the 2nd and 4th are "b"
        store.label(photo, "ana", "b" if i in (1, 3) else "a", CLASSES)
    store.label(audited[0], "ben", "b", CLASSES)  # a conflict: no consensus, left out
    assert store.audits(3) == [True, False, True, False]  # oldest label first
    assert store.audits(4) == []


def test_a_store_from_a_newer_meterid_is_refused(store_url: str):
    store = LabelStore(store_url)
    store.enqueue("run-1", review_queue(_scored(), "run-1", 0.1, 3))
    assert len(LabelStore(store_url).queue("run-1")) == 4  # reopened: migrated once, kept
    with create_engine(store_url).begin() as connection:
        assert connection.execute(text("SELECT version_num FROM review_alembic_version")
                                  ).scalar() == "0001_label_store"
        connection.execute(text("UPDATE review_alembic_version SET version_num = '0002_x'"))
    with pytest.raises(ReviewError, match="schema revision '0002_x', which this meterid"):
        LabelStore(store_url)


def test_reviewed_photos_give_the_field_accuracy_per_class(store_url: str):
    """Photos reviewers agree are a class count once (though queued by two runs); new types
    and conflicts have no class to count; the confusion is of what the product said."""
    store = LabelStore(store_url)
    for run in ("run-1", "run-2"):  # the same photos scored again the next night
        store.enqueue(run, review_queue(_scored(), run, share=1.0, floor=0))
    for i, truth in enumerate(["a", "a", "b", "b"]):  # the product's top-1 was "a"
        store.label(f"{i:064x}", "ana", truth, CLASSES)
    store.label("f" * 64, "ana", "b", CLASSES)  # UNKNOWN, but its top-1 "b" was right
    store.label(f"{4:064x}", "ana", NEW_TYPE, CLASSES)
    store.label(f"{5:064x}", "ana", "a", CLASSES)
    store.label(f"{5:064x}", "ben", "b", CLASSES)
    assert store.runs() == ["run-2", "run-1"]
    field = field_report(store, 3, CLASSES)
    assert (field.reviewed, field.correct, field.accuracy) == (5, 3, 0.6)
    per_class = field.per_class.set_index("class")
    assert per_class["reviewed"].to_dict() == {"a": 2, "b": 3}
    assert per_class.loc["b", "recall"] == pytest.approx(1 / 3)
    assert field.confusion.loc["b", "a"] == 2 and field.confusion.loc["b", UNKNOWN] == 1
    assert field_report(store, 4, CLASSES).accuracy is None


def test_the_migrations_build_the_schema_the_code_reads(store_url: str):
    """Alembic's revisions and the ORM tables agree: nothing left for autogenerate to add."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from meterid.review.store import VERSION_TABLE, Base

    LabelStore(store_url)
    with create_engine(store_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, Base.metadata) == []
