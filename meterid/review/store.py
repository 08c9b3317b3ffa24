"""The label store: each photo a scoring run sent to a person (the queue) and what each reviewer
said of it. SQLAlchemy over SQLite under the project by default, or the PostgreSQL of the
production stack (``review.store``).

A reviewer's verdict is a known class, or one of ``VERDICTS`` ("new type", "not a meter",
"unreadable"). A reviewer who labels a photo again replaces their own verdict; two reviewers
who disagree are both kept and the photo is a conflict until one of them changes their mind:
nothing is overwritten silently. The schema is Alembic's (``migrations/``): created on first
use, upgraded in place by a later meterid; a store a newer meterid migrated is refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from meterid.config import Params
from meterid.core import POOR_QUALITY, UNKNOWN
from meterid.review.audit import AuditVerdict, audit_verdict
from meterid.review.queue import AUDIT
from meterid.stores import REVIEW_STORE_ENV

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "review_alembic_version"  # not Alembic's default: the database may be shared
NEW_TYPE, NOT_A_METER, UNREADABLE = "new type", "not a meter", "unreadable"
VERDICTS = (NEW_TYPE, NOT_A_METER, UNREADABLE)  # besides a known class


class Base(DeclarativeBase):
    pass


class QueuedPhoto(Base):
    """A photo a scoring run sent to a person, with what the product said of it."""

    __tablename__ = "review_queue"
    __table_args__ = (UniqueConstraint("run_id", "sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str] = mapped_column(Text)
    model_version: Mapped[int | None] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(Text)  # the product's: a class, UNKNOWN, ...
    auto_accepted: Mapped[bool]
    prediction_set: Mapped[list[str]] = mapped_column(JSON)
    top_labels: Mapped[list[str]] = mapped_column(JSON)
    open_set_score: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(32))  # why queued; AUDIT is not shown
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    def in_words(self) -> str:
        """What the product said, as a reviewer reads it (an audit looks like any other)."""
        if self.label == UNKNOWN:
            return "new type?"
        if self.label == POOR_QUALITY:
            return "unreadable?"
        return f"{self.label}? candidates: {' | '.join(self.prediction_set or self.top_labels)}"


class Verdict(Base):
    """One reviewer's label of one photo (their latest)."""

    __tablename__ = "review_verdicts"
    __table_args__ = (UniqueConstraint("sha256", "reviewer"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    reviewer: Mapped[str] = mapped_column(String(128))
    verdict: Mapped[str] = mapped_column(Text)
    labelled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReviewError(ValueError):
    """A label or a store the review cannot take, and why."""


@dataclass(frozen=True)
class Conflict:
    sha256: str
    verdicts: dict[str, str]  # reviewer -> verdict


class LabelStore:
    """``url``: a SQLAlchemy URL (``sqlite:///path/review.db``, ``postgresql+psycopg2://...``)."""

    def __init__(self, url: str):
        self.engine = create_engine(url)
        _migrate(self.engine)

    def enqueue(self, run_id: str, queue: pd.DataFrame) -> int:
        """Add a run's queue (``review_queue``'s rows); photos already queued for this run are
        left as they are. Returns how many were added."""
        now = datetime.now(UTC)
        with Session(self.engine) as session:
            known = set(session.scalars(select(QueuedPhoto.sha256)
                                        .where(QueuedPhoto.run_id == run_id)))
            added = [_queued(row, run_id, now) for row in queue.to_dict("records")
                     if row["sha256"] not in known]
            session.add_all(added)
            session.commit()
        log.info("review queue of run %s: %d photos added (%d already there)", run_id,
                 len(added), len(queue) - len(added))
        return len(added)

    def queue(self, run_id: str | None = None, reviewer: str | None = None
              ) -> list[QueuedPhoto]:
        """Queued photos (of one run, or all), oldest first; with ``reviewer``, only those
        this reviewer has not labelled yet."""
        query = select(QueuedPhoto).order_by(QueuedPhoto.id)
        if run_id is not None:
            query = query.where(QueuedPhoto.run_id == run_id)
        if reviewer is not None:
            done = select(Verdict.sha256).where(Verdict.reviewer == reviewer)
            query = query.where(QueuedPhoto.sha256.not_in(done))
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(query))

    def label(self, sha256: str, reviewer: str, verdict: str, classes: Sequence[str]) -> None:
        """Record ``reviewer``'s ``verdict`` on a queued photo (a class or one of VERDICTS)."""
        if verdict not in (*classes, *VERDICTS):
            raise ReviewError(f"{verdict!r} is neither a class of the model "
                              f"({', '.join(classes)}) nor one of {', '.join(VERDICTS)}")
        if not reviewer.strip():
            raise ReviewError("a verdict needs the reviewer's name")
        with Session(self.engine) as session:
            if session.scalar(select(QueuedPhoto.id).where(QueuedPhoto.sha256 == sha256)
                              .limit(1)) is None:
                raise ReviewError(f"photo {sha256[:12]}... is in no review queue")
            mine = session.scalar(select(Verdict).where(Verdict.sha256 == sha256,
                                                        Verdict.reviewer == reviewer))
            if mine is None:
                session.add(Verdict(sha256=sha256, reviewer=reviewer, verdict=verdict,
                                    labelled_at=datetime.now(UTC)))
            else:
                mine.verdict, mine.labelled_at = verdict, datetime.now(UTC)
            session.commit()

    def find(self, prefix: str) -> str:
        """The queued photo whose sha256 starts with ``prefix`` (8 characters are plenty)."""
        with Session(self.engine) as session:
            found = sorted(set(session.scalars(select(QueuedPhoto.sha256).where(
                QueuedPhoto.sha256.startswith(prefix.lower())).limit(2))))
        if len(found) != 1:
            raise ReviewError(f"no queued photo starts with {prefix!r}" if not found else
                              f"{prefix!r} names several photos: give more of the sha256")
        return found[0]

    def verdicts(self, sha256: str) -> dict[str, str]:
        with Session(self.engine) as session:
            rows = session.execute(select(Verdict.reviewer, Verdict.verdict)
                                   .where(Verdict.sha256 == sha256)).all()
        return {reviewer: verdict for reviewer, verdict in rows}

    def agreed(self) -> dict[str, str]:
        """Each labelled photo on which every reviewer agrees, with that verdict."""
        by_photo: dict[str, set[str]] = {}
        with Session(self.engine) as session:
            for sha256, verdict in session.execute(select(Verdict.sha256, Verdict.verdict)):
                by_photo.setdefault(sha256, set()).add(verdict)
        return {sha: next(iter(said)) for sha, said in by_photo.items() if len(said) == 1}

    def conflicts(self) -> list[Conflict]:
        """Photos whose reviewers disagree, with each one's verdict."""
        rows: dict[str, dict[str, str]] = {}
        with Session(self.engine) as session:
            for sha256, reviewer, verdict in session.execute(
                    select(Verdict.sha256, Verdict.reviewer, Verdict.verdict)):
                rows.setdefault(sha256, {})[reviewer] = verdict
        return [Conflict(sha, said) for sha, said in sorted(rows.items())
                if len(set(said.values())) > 1]

    def reviewed(self, model_version: int | None) -> list[tuple[str, str, str]]:
        """The queued photos of ``model_version`` that reviewers agree on, once each: (the
        product's label, its top-1 class, the reviewers' verdict)."""
        agreed = self.agreed()
        with Session(self.engine) as session:
            photos = session.scalars(select(QueuedPhoto).where(
                QueuedPhoto.model_version.is_(None) if model_version is None
                else QueuedPhoto.model_version == model_version).order_by(QueuedPhoto.id))
            seen: dict[str, tuple[str, str, str]] = {}
            for photo in photos:
                if photo.sha256 in agreed and photo.sha256 not in seen:
                    top1 = photo.top_labels[0] if photo.top_labels else ""
                    seen[photo.sha256] = (photo.label or "", top1, agreed[photo.sha256])
        return list(seen.values())

    def runs(self) -> list[str]:
        """The scoring runs that queued photos, newest first."""
        with Session(self.engine) as session:
            rows = session.execute(select(QueuedPhoto.run_id, QueuedPhoto.id)
                                   .order_by(QueuedPhoto.id.desc())).all()
        return list(dict.fromkeys(run for run, _ in rows))

    def audits(self, model_version: int | None) -> list[bool]:
        """The audited auto-accepted photos of ``model_version`` that reviewers agree on,
        oldest label first: True where the product's label was wrong."""
        agreed = self.agreed()
        with Session(self.engine) as session:
            audited = session.execute(
                select(QueuedPhoto.sha256, QueuedPhoto.label, Verdict.labelled_at)
                .join(Verdict, Verdict.sha256 == QueuedPhoto.sha256)
                .where(QueuedPhoto.reason == AUDIT,
                       QueuedPhoto.model_version.is_(None) if model_version is None
                       else QueuedPhoto.model_version == model_version)
                .order_by(Verdict.labelled_at)).all()
        seen: set[str] = set()
        wrong = []
        for sha256, label, _ in audited:
            if sha256 in agreed and sha256 not in seen:
                seen.add(sha256)
                wrong.append(agreed[sha256] != label)
        return wrong


def _migrate(engine: Engine) -> None:
    """Bring the store to this meterid's schema with Alembic (``migrations/``): created on
    first use, upgraded in place later; a store a newer meterid migrated is refused."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    with engine.begin() as connection:
        current = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}).get_current_revision()
        if current is not None and current not in known:
            raise ReviewError(f"the label store {engine.url!r} has schema revision {current!r}, "
                              "which this meterid does not know: upgrade meterid")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def open_store(params: Params) -> LabelStore:
    """The project's label store: $METERID_REVIEW_STORE (``meterid serve --postgres`` sets it
    for its worker), else ``review.store``, else SQLite at ``paths.review_db``."""
    url = os.environ.get(REVIEW_STORE_ENV) or params.review.store
    if url:
        return LabelStore(url)
    params.paths.review_db.parent.mkdir(parents=True, exist_ok=True)
    return LabelStore(f"sqlite:///{params.paths.review_db.resolve()}")


def known_classes(params: Params) -> list[str]:
    """The classes a reviewer can give: the dataset's class folders."""
    raw = params.paths.raw_dir
    return sorted(p.name for p in raw.iterdir() if p.is_dir()) if raw.is_dir() else []


def field_verdict(store: LabelStore, model_version: int | None, params: Params) -> AuditVerdict:
    """Whether ``model_version`` may auto-accept on the next run, by its field audits at the
    certified target (``evaluate.max_accept_error`` at ``evaluate.accept_confidence``)."""
    return audit_verdict(store.audits(model_version), params.evaluate.max_accept_error,
                         params.evaluate.accept_confidence, params.review.audit_window)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value))


def _queued(row: dict, run_id: str, now: datetime) -> QueuedPhoto:
    """A queue row from a scoring output row (Parquet: a list arrives as an array)."""
    tops = [row.get(f"top{k}_label") for k in (1, 2, 3)]
    version, score, candidates = (row.get(k) for k in ("model_version", "open_set_score",
                                                          "prediction_set"))
    return QueuedPhoto(
        run_id=run_id, sha256=row["sha256"], url=row["url"],
        model_version=None if _missing(version) else int(float(str(version))),
        label=row.get("label"),
        auto_accepted=bool(row.get("auto_accepted")),
        prediction_set=[] if candidates is None else [str(x) for x in candidates],
        top_labels=[str(t) for t in tops if not _missing(t)],
        open_set_score=None if _missing(score) else float(str(score)),
        reason=row["reason"], queued_at=now)
