"""Which of a series' label versions a dataset build trains on: reviewed ones first.

A **reviewed label version** is a :class:`~radseg.db.models.LabelSet` that a person made from a
prediction: a reviewer's correction (``source`` ``"review"``, with the prediction it corrects,
see :mod:`radseg.workflows.corrections`) or an adjudicated mask signed off from several
readers' work (``source`` ``"adjudication"``). Everything else (``import``, ``seg``,
``rtstruct``, ...) is an imported label version. :func:`is_reviewed` is the one rule, and
:func:`reviewed_clause` says the same in SQL.

:func:`training_label_set` picks what a dataset version (and an evaluation) takes as a series'
truth: the newest reviewed label version if there is one, else the newest imported one. A later
re-import does not undo a reviewer's work; a later correction supersedes an earlier one.
Functions take rows (or a session) and never commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, or_

from radseg.db.models import LabelSet

#: the sources of label versions that people made from predictions
REVIEWED_SOURCES: tuple[str, ...] = ("review", "adjudication")


def is_reviewed(label_set: LabelSet) -> bool:
    """Whether ``label_set`` is a reviewed label version (see the module docstring): made from
    a prediction, or of a reviewed source (its prediction may since have been deleted)."""
    return label_set.prediction_id is not None or label_set.source in REVIEWED_SOURCES


def reviewed_clause() -> ColumnElement[bool]:
    """:func:`is_reviewed` as a SQL condition on :class:`LabelSet` rows."""
    return or_(LabelSet.prediction_id.is_not(None), LabelSet.source.in_(REVIEWED_SOURCES))


def training_label_set(label_sets: Iterable[LabelSet]) -> LabelSet | None:
    """The label version a series trains on: the newest reviewed one, else the newest one;
    ``None`` when it has none."""
    return max(label_sets, key=lambda ls: (is_reviewed(ls), ls.version), default=None)


def provenance(label_set: LabelSet) -> dict[str, Any]:
    """What a COCO image record (and a model version's lineage) says of its label version; no
    reader's name (the dataset may leave the site)."""
    return {
        "label_set_id": label_set.id,
        "version": label_set.version,
        "source": label_set.source,
        "reviewed": is_reviewed(label_set),
        "prediction_id": label_set.prediction_id,
    }
