"""Evaluate a model version on a split of a dataset version and write its report.

Every series of the split (the dataset version's patient-level split: the series of the
patients in it) is predicted whole, with the channel recipe of the dataset version the model was
trained on, and compared with its latest labels in 3D with the series' spacing
(:mod:`radseg.metrics`: per class, per series, and over the split). The report folder
``reports/evaluation-<id>/`` holds ``report.json`` (all numbers), ``report.md`` (the table) and
PNG plots: Dice and HD95 per class over the series, and the training history of the model
version. It appears complete or not at all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from radseg import metrics as radseg_metrics
from radseg.contracts import ClassInfo, ProgressFn, no_progress
from radseg.core import Platform
from radseg.db.models import (
    DatasetMember,
    DatasetVersion,
    Evaluation,
    Job,
    ModelVersion,
    Series,
    Study,
)
from radseg.errors import InputError
from radseg.imaging.dataset_version import SPLITS as DATASET_SPLITS
from radseg.imaging.volumes import read_volume
from radseg.label_versions import training_label_set
from radseg.model_registry import get_version
from radseg.roles import OPERATORS, Actor, require_role
from radseg.storage import atomic_directory
from radseg.workflows.jobs import queue_job
from radseg.workflows.lookup import get_row
from radseg.workflows.prediction import ModelRun

logger = logging.getLogger(__name__)

#: the splits a model version may be evaluated on, a dataset version's
#: (:data:`radseg.imaging.dataset_version.SPLITS`), the test split first (the default)
EVALUATION_SPLITS: tuple[str, ...] = tuple(reversed(DATASET_SPLITS))
#: the ``split`` of an evaluation on chosen series (a retrain's reviewed cases), not a split
CASES = "cases"


def evaluate(
    platform: Platform,
    *,
    model_version_id: int,
    split: str = "test",
    dataset_version_id: int | None = None,
    tolerance_mm: float = radseg_metrics.DEFAULT_TOLERANCE_MM,
    created_by: str = "",
    progress: ProgressFn = no_progress,
    cases: Collection[str] | None = None,
) -> Evaluation:
    """Measure the model version on ``split`` (default: of the dataset version it was trained
    on); commits the :class:`Evaluation` with its report.

    :param cases: SeriesInstanceUIDs of the dataset version to measure on instead of a split,
        whatever split they are in (a retrain's reviewed cases); the evaluation's ``split`` is
        then :data:`CASES`.
    """
    check_split(split)
    if cases is not None:
        split = CASES
    with platform.sessions() as session:
        version = get_version(session, model_version_id)
        dataset_version_id = dataset_version_id or version.dataset_version_id
        dataset_version = session.get(DatasetVersion, dataset_version_id)
        if dataset_version is None:
            raise InputError(f"dataset version {dataset_version_id} does not exist")
        series = _labelled_series(platform, session, dataset_version, split, cases)
        model = ModelRun.of(platform, version, dataset_version.recipe)
        history = (version.history or {}).get("validations") or []
        title = f"model version {version.id} ({version.model.name}) on " + (
            f"{dataset_version.dataset.name} v{dataset_version.version} {split}"
        )
    studies = {
        uid: _measure_series(
            platform, model, volume, labels, tolerance_mm, progress_of_series, modality
        )
        for uid, volume, labels, modality, progress_of_series in _each_with_progress(
            series, progress
        )
    }
    summary: dict[str, Any] = radseg_metrics.dataset_summary(studies)
    summary["tolerance_mm"] = tolerance_mm
    with platform.sessions.begin() as session:
        evaluation = Evaluation(
            model_version_id=model_version_id,
            dataset_version_id=dataset_version_id,
            split=split,
            metrics=json.loads(json.dumps(summary)),
            created_by=created_by,
        )
        session.add(evaluation)
        session.flush()
        report_dir = platform.path("reports", f"evaluation-{evaluation.id}")
        progress(0.95, "writing the report")
        with atomic_directory(report_dir) as tmp:
            write_report(tmp, title, summary, model.classes, history)
        evaluation.report_path = platform.relative(report_dir)
    progress(1.0, f"evaluation {evaluation.id}: mean Dice {_fmt(summary['mean_dice'])}")
    return evaluation


def _labelled_series(
    platform: Platform,
    session: Session,
    dataset_version: DatasetVersion,
    split: str,
    cases: Collection[str] | None = None,
) -> list[tuple[str, Path, Path, str]]:
    """``(SeriesInstanceUID, volume, labels, modality)`` of each labelled series in ``split``
    (or among ``cases``); the labels are the series'
    :func:`~radseg.label_versions.training_label_set`, the truth a dataset build would take.

    :raises InputError: the split has no labelled series.
    """
    patients = set((dataset_version.split or {}).get(split, []))
    rows = session.execute(
        select(Series, Study.patient_key)
        .join(Study, Study.id == Series.study_id)
        .join(DatasetMember, DatasetMember.series_id == Series.id)
        .where(DatasetMember.dataset_id == dataset_version.dataset_id)
        .order_by(Series.id)
    ).all()
    series: list[tuple[str, Path, Path, str]] = []
    for s, patient_key in rows:
        labels = training_label_set(s.label_sets)
        chosen = patient_key in patients if cases is None else s.series_instance_uid in cases
        if chosen and labels is not None:
            volume, label_file = platform.resolve(s.volume_path), platform.resolve(labels.path)
            series.append((s.series_instance_uid, volume, label_file, s.modality or ""))
    if not series:
        raise InputError(
            f"dataset version {dataset_version.dataset.name} v{dataset_version.version} has "
            + (
                f"no labelled series in its {split!r} split; choose another --split"
                if cases is None
                else f"none of the {len(cases)} series asked for among its labelled series"
            )
        )
    return series


def _each_with_progress(
    series: list[tuple[str, Path, Path, str]], progress: ProgressFn
) -> Iterator[tuple[str, Path, Path, str, ProgressFn]]:
    """Each series with the share of ``progress`` (up to 90%) its prediction reports into."""
    for n, (uid, volume, labels, modality) in enumerate(series):
        base = n / len(series)
        progress(base, f"series {n + 1}/{len(series)}: predicting")
        yield uid, volume, labels, modality, _scaled(progress, base, 0.9 / len(series))


def _measure_series(
    platform: Platform,
    model: ModelRun,
    volume: Path,
    labels: Path,
    tolerance_mm: float,
    progress: ProgressFn,
    modality: str = "",
) -> dict[str, radseg_metrics.BinaryMetrics]:
    """The model's prediction of one series against its labels, per class name (made as a
    prediction makes it: a CT's slices of air only are background)."""
    hu, geometry = read_volume(volume)
    truth, _ = read_volume(labels)
    predicted = model.predict(platform, hu, progress, modality=modality)
    per_id = radseg_metrics.class_metrics(
        predicted,
        truth,
        [c.id for c in model.classes],
        radseg_metrics.spacing_zyx(geometry.spacing),
        tolerance_mm=tolerance_mm,
    )
    return {c.name: per_id[c.id] for c in model.classes}


def write_report(
    directory: Path,
    title: str,
    summary: dict[str, Any],
    classes: list[ClassInfo],
    history: list[dict[str, Any]],
) -> list[Path]:
    """``report.json``, ``report.md`` and the PNG plots into ``directory``; the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "report.json", directory / "report.md"]
    written[0].write_text(json.dumps(summary, indent=1), encoding="utf-8")
    written[1].write_text(markdown_table(title, summary), encoding="utf-8")
    written.extend(plot_report(directory, summary, classes, history))
    return written


def markdown_table(title: str, summary: dict[str, Any]) -> str:
    """Per class: mean ± std over the series of each metric, and the number of series."""
    lines = [
        f"# {title}",
        "",
        f"Mean Dice over the classes: {_fmt(summary['mean_dice'])}; surface Dice at "
        f"{summary.get('tolerance_mm')} mm; distances in mm; volume difference in mm³.",
        "",
        "| class | Dice | IoU | HD95 | ASSD | surface Dice | volume diff | series |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, per_metric in summary["per_class"].items():
        cells = [
            _mean_std(per_metric[m])
            for m in ("dice", "iou", "hd95", "assd", "surface_dice", "volume_diff_mm3")
        ]
        n = per_metric["dice"]["n"]
        lines.append(f"| {name} | {' | '.join(cells)} | {n} |")
    return "\n".join(lines) + "\n"


def plot_report(
    directory: Path,
    summary: dict[str, Any],
    classes: list[ClassInfo],
    history: list[dict[str, Any]],
) -> list[Path]:
    """Box plots of Dice and HD95 per class over the series; the validation history."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a worker
    import matplotlib.pyplot as plt

    written = []
    names = [c.name for c in classes]
    for metric, label in (("dice", "Dice"), ("hd95", "HD95 (mm)")):
        values = [
            [
                v
                for study in summary["studies"].values()
                if (v := study["per_class"].get(name, {}).get(metric)) is not None
            ]
            for name in names
        ]
        fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names)), 3.2), dpi=100)
        ax.boxplot([v or [float("nan")] for v in values], tick_labels=names)
        ax.set_ylabel(label)
        ax.set_title(f"{label} per class over {len(summary['studies'])} series")
        if metric == "dice":
            ax.set_ylim(0, 1.02)
        ax.tick_params(axis="x", rotation=30)
        fig.tight_layout()
        path = directory / f"{metric}_per_class.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    if history:
        iterations = [e["iteration"] for e in history]
        fig, ax = plt.subplots(figsize=(5.0, 3.2), dpi=100)
        dice = [_nan(e.get("mean_dice")) for e in history]
        ax.plot(iterations, dice, marker="o", label="val Dice")
        ax.set_xlabel("iteration")
        ax.set_ylabel("mean Dice")
        ax.set_ylim(0, 1.02)
        losses = [_nan(e.get("loss")) for e in history]
        if any(v == v for v in losses):  # not all NaN
            twin = ax.twinx()
            twin.plot(iterations, losses, color="tab:red", alpha=0.6, label="loss")
            twin.set_ylabel("training loss")
        ax.set_title("validation during training")
        fig.tight_layout()
        path = directory / "history.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def _mean_std(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "-" if not stats.get("inf") else "∞"
    text = f"{stats['mean']:.3f} ± {stats['std']:.3f}"
    return text + (f" (+{stats['inf']} ∞)" if stats.get("inf") else "")


def _scaled(progress: ProgressFn, start: float, share: float) -> ProgressFn:
    def report(fraction: float, message: str) -> None:
        progress(start + share * fraction, message)

    return report


def _nan(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


# --- use cases ----------------------------------------------------------------------------------


def check_split(split: str) -> str:
    """``split`` if it is one of :data:`EVALUATION_SPLITS`, else :class:`InputError`."""
    if split not in EVALUATION_SPLITS:
        raise InputError(
            f"unknown split {split!r}; split must be one of: {', '.join(EVALUATION_SPLITS)}"
        )
    return split


def request_evaluation(
    platform: Platform,
    actor: Actor,
    *,
    model_version_id: int,
    split: str = "test",
    dataset_version_id: int | None = None,
    via: str | None = None,
) -> Job:
    """Queue a job that evaluates a model version on ``split`` of a dataset version (default:
    the one it was trained on); audited.

    :raises NotFound: no such model version or dataset version.
    :raises InputError: an unknown split.
    """
    require_role(actor, OPERATORS, "evaluate models")
    check_split(split)
    payload: dict[str, Any] = {"model_version_id": model_version_id, "split": split}
    extra = {"via": via} if via else {}
    with platform.sessions.begin() as session:
        get_row(session, ModelVersion, model_version_id, "model version")
        if dataset_version_id is not None:
            get_row(session, DatasetVersion, dataset_version_id, "dataset version")
            payload["dataset_version_id"] = dataset_version_id
        return queue_job(
            session,
            platform,
            actor,
            "evaluate",
            payload,
            target=f"model_version:{model_version_id}",
            **extra,
        )
