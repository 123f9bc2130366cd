"""What one ingest reports: per series, per study and in all, and how it names problem files.

Every problem is reported with its file and reason, in two forms (:class:`ProblemNames`): the
console of whoever ran the ingest shows the file as they named it (it is their own file on their
own terminal); what is stored (the study's report, the job's result or message) shows its
de-identified name and a keyed hash of the real one, which tells apart files whose names differ
only by the patient's name. The console shows the hash too, to match the two.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from radseg.contracts import IngestProblem, SeriesVolume, count_problems
from radseg.errors import IngestFailed

__all__ = ["IngestReport", "ProblemNames", "SeriesReport", "StudyReport"]

#: Problems a failed ingest's message lists (the console lists them all).
_MAX_LISTED = 100


class ProblemNames:
    """How a problem's file is named: as stored, and on the console (see the module doc)."""

    def __init__(self, key: bytes = b"") -> None:
        self._key = key

    def tag(self, problem: IngestProblem) -> str:
        """``#`` and 10 hex digits of an HMAC of the real path: unique per file in practice,
        and, being keyed, no way to test a guessed name (a patient's) against it."""
        data = b"ingest-path:" + problem.path.encode("utf-8", "surrogateescape")
        return "#" + hmac.new(self._key, data, hashlib.sha256).hexdigest()[:10]

    def stored(self, problem: IngestProblem) -> str:
        """The de-identified name (``file`` where it could not be checked), hash, frame."""
        return f"{_printable(problem.name or 'file')} {self.tag(problem)}{_frame(problem)}"

    def shown(self, problem: IngestProblem) -> str:
        """The real name, frame and hash, for the console only."""
        return f"{_printable(problem.path)}{_frame(problem)} [{self.tag(problem)}]"

    def stored_dict(self, problem: IngestProblem) -> dict[str, Any]:
        return {"path": self.stored(problem), "reason": problem.reason, "frame": problem.frame}


def _frame(problem: IngestProblem) -> str:
    return f" frame {problem.frame}" if problem.frame is not None else ""


def _printable(text: str) -> str:
    """``text`` as is when printable, else escaped: a file name may hold newlines or escape
    sequences that would forge report lines or move the terminal's cursor."""
    return text if text.isprintable() else ascii(text)[1:-1]


@dataclass
class SeriesReport:
    """One series of a study as the ingest saw it."""

    series_instance_uid: str
    modality: str
    slices: int
    status: str  # "added" or "already present"
    labels: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, volume: SeriesVolume, *, added: bool) -> SeriesReport:
        """The report of ``volume``, stored now (``added``) or found stored already."""
        return cls(
            series_instance_uid=volume.series_instance_uid,
            modality=volume.modality,
            slices=len(volume.slices),
            status="added" if added else "already present",
            labels=[c.name for c in volume.classes] if volume.labels is not None else [],
            warnings=list(volume.warnings),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "series_instance_uid": self.series_instance_uid,
            "modality": self.modality,
            "slices": self.slices,
            "status": self.status,
            "labels": self.labels,
            "warnings": self.warnings,
        }


@dataclass
class StudyReport:
    """Per-study report: series found, files skipped and why, slices, labels."""

    study_instance_uid: str
    patient_key: str
    series: list[SeriesReport] = field(default_factory=list)
    skipped: list[IngestProblem] = field(default_factory=list)
    names: ProblemNames = field(default_factory=ProblemNames, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The report as stored with the study: files by their stored names."""
        return {
            "study_instance_uid": self.study_instance_uid,
            "patient_key": self.patient_key,
            "series": [s.to_dict() for s in self.series],
            "skipped": [self.names.stored_dict(p) for p in self.skipped],
            "slices": sum(s.slices for s in self.series),
        }

    def lines(self) -> list[str]:
        """The report as text lines, for the console (files by their real names)."""
        out = [f"study {self.study_instance_uid} (patient {self.patient_key})"]
        for s in self.series:
            labels = f", labels: {', '.join(s.labels)}" if s.labels else ""
            out.append(
                f"  series {s.series_instance_uid} {s.modality}: {s.slices} slices, "
                f"{s.status}{labels}"
            )
            out.extend(f"    warning: {w}" for w in s.warnings)
        out.extend(f"  skipped {self.names.shown(p)}: {p.reason}" for p in self.skipped)
        return out


@dataclass
class IngestReport:
    """What one ingest did; contains pseudonymised identifiers only.

    :meth:`add_series` counts each series as it is stored; :meth:`finish` then files every
    problem under the study of its series and puts the studies in UID order.
    """

    added: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    problems: list[IngestProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    slices: int = 0
    labelled: int = 0
    studies: list[StudyReport] = field(default_factory=list)
    names: ProblemNames = field(default_factory=ProblemNames, repr=False)

    def add_series(self, volume: SeriesVolume, *, added: bool, labelled: bool) -> None:
        """Count ``volume``, stored now (``added``) or found stored, and list it in its study."""
        if added:
            self.added.append(volume.series_instance_uid)
            self.slices += len(volume.slices)
        else:
            self.already_present.append(volume.series_instance_uid)
        self.labelled += labelled
        self.warnings.extend(volume.warnings)
        study = self._study(volume)
        study.series.append(SeriesReport.of(volume, added=added))

    def _study(self, volume: SeriesVolume) -> StudyReport:
        for study in self.studies:
            if study.study_instance_uid == volume.study_instance_uid:
                return study
        study = StudyReport(volume.study_instance_uid, volume.patient_key, names=self.names)
        self.studies.append(study)
        return study

    def finish(self) -> None:
        """File each problem under the study of its series; studies in UID order."""
        by_series = {s.series_instance_uid: study for study in self.studies for s in study.series}
        for problem in self.problems:
            study = by_series.get(problem.series_instance_uid)
            if study is not None:
                study.skipped.append(problem)
        self.studies.sort(key=lambda study: study.study_instance_uid)

    @property
    def stored_nothing(self) -> bool:
        """Whether no series was stored or found stored (the ingest failed)."""
        return not self.added and not self.already_present

    @property
    def unassigned(self) -> list[IngestProblem]:
        """Problems not listed under any study of the report: files that could not be tied to
        a series (unreadable, not images) and those of series that were excluded whole (e.g.
        made only of localizers)."""
        listed = {id(p) for study in self.studies for p in study.skipped}
        return [p for p in self.problems if id(p) not in listed]

    def to_dict(self) -> dict[str, Any]:
        """The report as stored (a job's result): files by their stored names."""
        return {
            "added": self.added,
            "already_present": self.already_present,
            "problems": [self.names.stored_dict(p) for p in self.problems],
            "warnings": self.warnings,
            "slices": self.slices,
            "labelled": self.labelled,
            "studies": [s.to_dict() for s in self.studies],
        }

    def summary(self) -> str:
        problems = (
            f"{len(self.problems)} problem(s) ({count_problems(self.problems)})"
            if self.problems
            else "0 problems"
        )
        return (
            f"{len(self.added)} series added, {len(self.already_present)} already present, "
            f"{self.slices} slices, {self.labelled} with labels, {problems}"
        )

    def failure(self, headline: str) -> IngestFailed:
        """The error for an ingest that stored nothing: every problem, stored and shown."""
        stored = [f"{self.names.stored(p)}: {p.reason}" for p in self.problems[:_MAX_LISTED]]
        if len(self.problems) > _MAX_LISTED:
            stored.append(f"and {len(self.problems) - _MAX_LISTED} more")
        shown = [f"skipped {self.names.shown(p)}: {p.reason}" for p in self.problems]
        return IngestFailed(headline, "; ".join(stored), shown)
