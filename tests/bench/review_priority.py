"""Does the review priority find the predictions that need a correction?

Two corpora, each with a semantic FPN trained here (radseg's detectron2 backend, as a job would)
and a harder held-out set it never saw:

* **phantom**: :func:`radseg.imaging.synthetic.write_synthetic_ct` series (liver, lungs, spine,
  kidneys). Training: ``--train`` clean patients. Held out: other patients, clean and made
  harder — heavy noise, streak artefacts, a bright "metal" blob, a different field of view
  (zoomed out: the body smaller in a larger field; zoomed in: cropped), truncation (one side of
  the body cut off), a shifted HU calibration — alone and combined;
* **chest**: slicerio's chest CT (``CTChest4.nrrd`` with its 7-segment segmentation, loaded as
  :mod:`tests.bench.slicerio_quality` does): trained on its slices ``z % 4 != 1``, held out the
  ``z % 4 == 1`` slices with the same corruptions.

Each held-out case is predicted with flip TTA and the per-voxel uncertainty, stored (uint8) and
scored exactly as :func:`radseg.workflows.prediction.predict` does (signals, the training split's
statistics read back from the dataset version, the rule of :mod:`radseg.imaging.review_priority`).
Its error is 1 − its mean Dice over the classes present in the truth or the prediction. The run
prints, per corpus and pooled: Spearman's ρ between priority and error, and the share of the
total error held by the top 20 % of the queue (goal: ρ ≥ 0.6 and ≥ 50 %), next to two baselines
in the same run: a queue in random order (its expected share is 20 %) and ranking by the mean
uncertainty of the whole series alone. Run::

    OMP_NUM_THREADS=1 nice .venv/bin/python -m tests.bench.review_priority

(about 25 minutes on the shared 2-core machine, nearly all of it training the two models; see
docs/benchmarks.md for side-by-side training with ``--corpus``).

Every case's error, priority, Dice and signals per class go to ``OUT/rows-CORPUS.json``.
``--iterations`` and ``--image-size`` trade time for model quality; ``--out`` keeps the work, and
a second run with the same ``--out`` resumes the models from their checkpoints (so it only
predicts and scores again).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.summary import record

#: the phantom held out: its series' shape (z, y, x) and spacing (x, y, z) mm
PHANTOM_SHAPE = (12, 64, 64)
PHANTOM_SPACING = (6.0, 6.0, 8.0)
AIR = -1000.0


@dataclass
class Case:
    corpus: str
    name: str
    hu: np.ndarray
    truth: np.ndarray
    spacing: tuple[float, float, float]


# --- corruptions (HU volumes (z, y, x) and their labels) -----------------------------------------


def noise(hu: np.ndarray, labels: np.ndarray, rng: np.random.Generator, sd: float) -> Any:
    return hu + rng.normal(0, sd, hu.shape).astype(np.float32), labels


def streaks(hu: np.ndarray, labels: np.ndarray, rng: np.random.Generator, hu_amp: float) -> Any:
    """Bright and dark lines through one point of every slice, as beam hardening draws them."""
    _, h, w = hu.shape
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    angle = np.arctan2(yy - cy, xx - cx)
    pattern = np.cos(angle * int(rng.integers(5, 9))) ** 15 * hu_amp
    return hu + pattern[None].astype(np.float32), labels


def metal(hu: np.ndarray, labels: np.ndarray, rng: np.random.Generator, _: float) -> Any:
    """A 3000 HU blob with dark streaks around it."""
    hu = hu.copy()
    _, h, w = hu.shape
    cy, cx = int(rng.uniform(0.35, 0.65) * h), int(rng.uniform(0.35, 0.65) * w)
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - cy, xx - cx)
    hu[:, r < max(2, h // 20)] = 3000
    dark = np.cos(np.arctan2(yy - cy, xx - cx) * 4) ** 21 * -600 * (r > h // 20)
    return hu + dark[None].astype(np.float32), labels


def zoom_out(hu: np.ndarray, labels: np.ndarray, rng: np.random.Generator, f: float) -> Any:
    """A larger field of view: the anatomy shrunk by ``f`` in a frame of air (labels alike)."""
    from scipy import ndimage

    _, h, w = hu.shape
    small = ndimage.zoom(hu, (1, f, f), order=1)
    small_labels = ndimage.zoom(labels, (1, f, f), order=0)
    out = np.full_like(hu, AIR)
    out_labels = np.zeros_like(labels)
    sh, sw = small.shape[1:]
    y0, x0 = (h - sh) // 2, (w - sw) // 2
    out[:, y0 : y0 + sh, x0 : x0 + sw] = small
    out_labels[:, y0 : y0 + sh, x0 : x0 + sw] = small_labels
    return out, out_labels


def zoom_in(hu: np.ndarray, labels: np.ndarray, rng: np.random.Generator, f: float) -> Any:
    """A smaller field of view: the centre ``1/f`` of the frame enlarged to fill it."""
    from scipy import ndimage

    _, h, w = hu.shape
    ch, cw = int(h / f), int(w / f)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = hu[:, y0 : y0 + ch, x0 : x0 + cw]
    crop_labels = labels[:, y0 : y0 + ch, x0 : x0 + cw]
    zoom = (1, h / ch, w / cw)
    return (
        ndimage.zoom(crop, zoom, order=1)[:, :h, :w],
        ndimage.zoom(crop_labels, zoom, order=0)[:, :h, :w],
    )


def truncate(hu: np.ndarray, labels: np.ndarray, rng: np.random.Generator, f: float) -> Any:
    """The field of view cuts the body: a share ``f`` of the columns on one side is outside it
    (air in the image, nothing in the labels)."""
    hu, labels = hu.copy(), labels.copy()
    cut = int(hu.shape[2] * f)
    side = slice(0, cut) if rng.random() < 0.5 else slice(hu.shape[2] - cut, None)
    hu[:, :, side] = AIR
    labels[:, :, side] = 0
    return hu, labels


def shift(hu: np.ndarray, labels: np.ndarray, rng: np.random.Generator, offset: float) -> Any:
    return hu + np.float32(offset), labels


Corruption = Callable[[np.ndarray, np.ndarray, np.random.Generator, float], Any]
#: (name, corruption, strength) — applied alone, then in pairs below
HARDER: list[tuple[str, Corruption, float]] = [
    ("noise 40", noise, 40.0),
    ("noise 120", noise, 120.0),
    ("streaks", streaks, 350.0),
    ("metal", metal, 0.0),
    ("FOV ×0.7", zoom_out, 0.7),
    ("FOV ×1.4", zoom_in, 1.4),
    ("truncated 30 %", truncate, 0.3),
    ("HU +150", shift, 150.0),
]
PAIRS = [("noise 120", "truncated 30 %"), ("streaks", "FOV ×0.7"), ("metal", "HU +150")]


def variants(
    corpus: str, hu: np.ndarray, labels: np.ndarray, spacing: Any, seed: int
) -> Iterator[Case]:
    rng = np.random.default_rng(seed)
    yield Case(corpus, "clean", hu, labels, spacing)
    table = {name: (fn, s) for name, fn, s in HARDER}
    for name, fn, strength in HARDER:
        h, lab = fn(hu, labels, rng, strength)
        yield Case(corpus, name, h.astype(np.float32), lab.astype(np.uint8), spacing)
    for first, second in PAIRS:
        h, lab = hu, labels
        for name in (first, second):
            fn, strength = table[name]
            h, lab = fn(h, lab, rng, strength)
        yield Case(corpus, f"{first} + {second}", h.astype(np.float32), lab, spacing)


# --- the two corpora --------------------------------------------------------------------------


def phantom_training(root: Path, patients: int) -> tuple[Path, list[Any]]:
    """A dataset version built by radseg's writer from ``patients`` clean phantoms."""
    from radseg.contracts import Geometry, SeriesVolume, SliceRef
    from radseg.imaging.channels import ChannelRecipe
    from radseg.imaging.dataset_version import build_dataset_version
    from radseg.imaging.synthetic import SYNTHETIC_CLASSES

    items = []
    for seed in range(patients):
        study = phantom(root / f"p{seed}", seed)
        uid = f"2.25.77{seed}"
        items.append(
            SeriesVolume(
                patient_key=f"p{seed}",
                study_instance_uid=f"{uid}.0",
                series_instance_uid=uid,
                modality="CT",
                geometry=Geometry(
                    tuple(reversed(PHANTOM_SHAPE)),  # type: ignore[arg-type]
                    PHANTOM_SPACING,
                    (0.0, 0.0, 0.0),
                    (1, 0, 0, 0, 1, 0, 0, 0, 1),
                ),
                hu=study.hu,
                slices=[
                    SliceRef(f"{uid}.{k}", k, (0.0, 0.0, PHANTOM_SPACING[2] * k))
                    for k in range(PHANTOM_SHAPE[0])
                ],
                labels=study.labels,
            )
        )
    keys = [i.patient_key for i in items]
    split = {"train": keys[:-1], "val": keys[-1:], "test": []}
    out = root / "dataset"
    classes = list(SYNTHETIC_CLASSES)
    if not (out / "manifest.json").is_file():  # built by an earlier run with the same --out
        build_dataset_version(
            out, items, classes, ChannelRecipe(), split, name="phantom", version=1
        )
    return out, classes


def phantom(root: Path, seed: int) -> Any:
    from radseg.imaging.synthetic import write_synthetic_ct

    return write_synthetic_ct(root, seed=seed, shape=PHANTOM_SHAPE, spacing=PHANTOM_SPACING)


def chest_training(root: Path) -> tuple[Path, list[Any], Case]:
    """slicerio's chest CT: a dataset of its training slices (stacked in order, as one series,
    so the training statistics see whole structures) and the held-out slices as a case."""
    import json

    from PIL import Image

    from radseg.contracts import ClassInfo
    from radseg.imaging.channels import hu_to_channels
    from tests.bench.slicerio_quality import load_ct_and_labels, split_of

    hu, labels, spacing, names = load_ct_and_labels()
    images = hu_to_channels(hu)
    for sub in ("images", "labels", "annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    categories = [{"id": i, "name": n} for i, n in enumerate(names, start=1)]
    per_split: dict[str, list[dict[str, object]]] = {"train": [], "val": [], "test": []}
    for z in range(hu.shape[0]):
        split = split_of(z)
        name = f"chest_{z:04d}"
        Image.fromarray(images[z]).save(root / "images" / f"{name}.png")
        Image.fromarray(labels[z]).save(root / "labels" / f"{name}.png")
        records = per_split[split]
        records.append(
            {
                "id": len(records) + 1,
                "file_name": f"images/{name}.png",
                "sem_seg_file_name": f"labels/{name}.png",
                "height": int(hu.shape[1]),
                "width": int(hu.shape[2]),
                "series_instance_uid": f"slicerio.CTChest4.{split}",
                "slice_index": len(records),
                "spacing": list(spacing),
            }
        )
    for split, records in per_split.items():
        coco = {"images": records, "annotations": [], "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    test = [z for z in range(hu.shape[0]) if split_of(z) == "test"]
    classes = [ClassInfo(i, n) for i, n in enumerate(names, start=1)]
    held_out = Case("chest", "clean", hu[test], labels[test], spacing)
    return root, classes, held_out


# --- train, predict, score ----------------------------------------------------------------------


def train(dataset: Path, classes: list[Any], out: Path, args: argparse.Namespace) -> Any:
    from radseg.contracts import TrainRequest
    from radseg_plugins.models.detectron2 import Detectron2Backend

    config = {
        "architecture": "semantic_fpn",
        "iterations": args.iterations,
        "batch_size": 4,
        "base_lr": 0.02,
        "num_workers": 0,
        "eval_period": 0,
        "image_size": args.image_size,
        "rotation_degrees": 10.0,
        "scale_range": 0.1,
    }
    return Detectron2Backend().train(
        TrainRequest(dataset_dir=dataset, output_dir=out, classes=classes, config=config),
        lambda f, m: None,
    )


def mean_dice(predicted: np.ndarray, truth: np.ndarray, ids: list[int]) -> float:
    scores = []
    for i in ids:
        p, t = predicted == i, truth == i
        total = int(p.sum()) + int(t.sum())
        if total:
            scores.append(2 * int((p & t).sum()) / total)
    return float(np.mean(scores)) if scores else 1.0


def dice_of(predicted: np.ndarray, truth: np.ndarray, class_id: int) -> float:
    p, t = predicted == class_id, truth == class_id
    return 2 * int((p & t).sum()) / max(1, int(p.sum()) + int(t.sum()))


def score_cases(
    cases: list[Case], model: Any, classes: list[Any], dataset: Path
) -> list[dict[str, Any]]:
    from radseg.contracts import Geometry, PredictRequest, as_predict_output
    from radseg.imaging.channels import hu_to_channels
    from radseg.imaging.review_priority import quantise_uncertainty
    from radseg.workflows.doubt import reference_of_dataset, score_prediction
    from radseg_plugins.models.detectron2 import Detectron2Backend
    from radseg_plugins.models.detectron2.settings import Detectron2Settings

    backend = Detectron2Backend(Detectron2Settings(predict_flip_tta=True))
    reference = reference_of_dataset(dataset, classes)
    rows = []
    for case in cases:
        output = as_predict_output(
            backend.predict(
                PredictRequest(
                    model_dir=model.weights.parent,
                    weights=model.weights,
                    config=model.config,
                    classes=classes,
                    images=hu_to_channels(case.hu),
                    batch_size=8,
                    uncertainty=True,
                )
            )
        )
        assert output.uncertainty is not None
        stored = quantise_uncertainty(output.uncertainty)
        z, y, x = case.hu.shape
        geometry = Geometry((x, y, z), case.spacing, (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
        scored = score_prediction(
            output.labels, stored, output.method, classes, geometry, reference
        )
        dice = mean_dice(output.labels, case.truth, [c.id for c in classes])
        rows.append(
            {
                "corpus": case.corpus,
                "case": case.name,
                "error": 1.0 - dice,
                "priority": scored.priority,
                "reason": scored.reason,
                "mean_uncertainty": float(stored.mean() / 255.0),
                "dice": {
                    c.name: dice_of(output.labels, case.truth, c.id)
                    for c in classes
                    if (output.labels == c.id).any() or (case.truth == c.id).any()
                },
                "signals": scored.quality["classes"],
            }
        )
    return rows


def summary(rows: list[dict[str, Any]], key: str, rng: np.random.Generator) -> tuple[float, float]:
    """Spearman's ρ of ``key`` against the error, and the top 20 %'s share of the error."""
    from scipy.stats import spearmanr

    error = np.array([r["error"] for r in rows])
    if key == "random":
        score = rng.random(len(rows))
    elif key == "oracle":  # the queue sorted by the error itself: the best share there is
        score = error
    else:
        score = np.array([r[key] for r in rows])
    rho = float(spearmanr(score, error).statistic)
    top = max(1, round(0.2 * len(rows)))
    order = np.argsort(-score, kind="stable")
    return rho, float(error[order[:top]].sum() / error.sum()) if error.sum() else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--train", type=int, default=4, help="phantom patients to train on")
    parser.add_argument("--held-out", type=int, default=3, help="phantom patients held out")
    parser.add_argument("--out", type=Path, help="keep the work here (default: a temp dir)")
    parser.add_argument(
        "--corpus",
        choices=("phantom", "chest", "all"),
        default="all",
        help="one corpus only (two runs with the same --out can go side by side; a last "
        "--corpus all run then resumes both models and reports on all)",
    )
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="radseg-priority-"))
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {message}", file=sys.stderr)

    rows: list[dict[str, Any]] = []
    if args.corpus in ("phantom", "all"):
        dataset, classes = phantom_training(work / "phantom", args.train)
        log("phantom dataset built; training")
        model = train(dataset, classes, work / "phantom-model", args)
        cases = []
        for n in range(args.held_out):
            seed = 1000 + n
            study = phantom(work / f"held-{seed}", seed)
            cases += list(variants("phantom", study.hu, study.labels, PHANTOM_SPACING, seed))
        rows += score_cases(cases, model, classes, dataset)
        log(f"phantom: {len(cases)} held-out cases scored")
    if args.corpus in ("chest", "all"):
        dataset, classes, held_out = chest_training(work / "chest")
        log("chest CT dataset written; training")
        model = train(dataset, classes, work / "chest-model", args)
        cases = list(variants("chest", held_out.hu, held_out.truth, held_out.spacing, 7))
        rows += score_cases(cases, model, classes, dataset)
        log(f"chest: {len(cases)} held-out cases scored")

    import json

    (work / f"rows-{args.corpus}.json").write_text(json.dumps(rows, indent=1))
    rng = np.random.default_rng(0)
    print(
        f"\n{len(rows)} held-out predictions; semantic FPN, {args.iterations} iterations at "
        f"{args.image_size} px, flip TTA; error = 1 − mean Dice\n"
    )
    print(
        "| corpus | cases | ρ(priority, error) | top 20 % share | ρ mean uncertainty | "
        "its top 20 % | random order top 20 % | best possible top 20 % |"
    )
    print("|---|---|---|---|---|---|---|---|")
    met = True
    for corpus in ("phantom", "chest", "all"):
        chosen = [r for r in rows if corpus in ("all", r["corpus"])]
        if not chosen:
            continue
        rho, share = summary(chosen, "priority", rng)
        u_rho, u_share = summary(chosen, "mean_uncertainty", rng)
        _, r_share = summary(chosen, "random", rng)
        _, best = summary(chosen, "oracle", rng)
        print(
            f"| {corpus} | {len(chosen)} | {rho:.2f} | {share:.0%} | {u_rho:.2f} | "
            f"{u_share:.0%} | {r_share:.0%} | {best:.0%} |"
        )
        if corpus == "all":
            met = rho >= 0.6 and share >= 0.5
            record("review priority: Spearman ρ with 1 − Dice", "≥ 0.6", f"{rho:.2f}", rho >= 0.6)
            record(
                "review priority: share of the error in the top 20 % of the queue "
                f"(best possible order: {best:.0%})",
                "≥ 50 %",
                f"{share:.0%}",
                share >= 0.5,
            )
    print("\n| corpus | case | 1 − Dice | priority | reason |")
    print("|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["priority"]):
        print(
            f"| {r['corpus']} | {r['case']} | {r['error']:.3f} | {r['priority']:.3f} | "
            f"{r['reason']} |"
        )
    print(f"\ngoal ρ ≥ 0.6 and ≥ 50 % in the top 20 %: {'met' if met else 'NOT met'}")
    log("done")
    return 0  # a benchmark reports; `make bench` goes on to the next one either way


if __name__ == "__main__":
    sys.exit(main())
