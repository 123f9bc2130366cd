"""First renders of the viewer's images: an axial slice and coronal and sagittal reformats.

``python -m tests.bench.web_render [--size 512] [--slices 300] [--renders 60]``

A synthetic CT volume (``slices`` × ``size``² float32 HU: air, a body of soft tissue with
noise, two lungs, a spine) and a prediction mask are written as the HU cache and mask files of
one series; the app is radseg's Flask app in this process, logged in as a clinician. The volume
and mask are read into the volume cache once (timed, shown, not a goal); then each request asks
for an image no request asked for before (a new slice or plane index), so it is rendered and
encoded, not served from the image cache: the first view of that image by anyone. For each
kind the server's CPU time per request (this thread's, around the whole WSGI call: routing,
login, row cache, cut, window, PNG encoding) and its wall time are measured; the goals are on
the CPU time's p95: ≤ 20 ms per axial slice and ≤ 40 ms per reformat (issue 15).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from werkzeug.security import generate_password_hash

from radseg.contracts import Geometry
from radseg.db.models import (
    Prediction,
    Role,
    Series,
    Study,
    User,
)
from radseg.imaging.volumes import write_volume
from radseg.settings import load_settings
from radseg.web import create_app
from tests.bench.summary import machine, record
from tests.support import migrated_platform, nominal_model_version
from tests.web_support import log_in_as

AXIAL_GOAL_MS = 20.0
REFORMAT_GOAL_MS = 40.0


def phantom(slices: int, size: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(HU, mask) of shape (slices, size, size): a noisy body with lungs and a spine; the mask
    marks the lungs (class 1) and a lesion (class 2)."""
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[:size, :size]
    c = size / 2
    body = ((x - c) / (0.42 * size)) ** 2 + ((y - c) / (0.32 * size)) ** 2 < 1
    lungs = (
        ((np.abs(x - c) - 0.18 * size) / (0.12 * size)) ** 2 + ((y - c) / (0.2 * size)) ** 2
    ) < 1
    spine = (x - c) ** 2 + (y - 0.75 * size) ** 2 < (0.05 * size) ** 2
    section = np.full((size, size), -1000.0, dtype=np.float32)
    section[body] = 40
    section[lungs] = -820
    section[spine] = 700
    hu = np.empty((slices, size, size), dtype=np.float32)
    for k in range(slices):
        hu[k] = section + rng.standard_normal((size, size), dtype=np.float32) * 20
    mask = np.zeros(hu.shape, dtype=np.uint8)
    mask[:, lungs] = 1
    third = slice(slices // 3, slices // 3 + max(1, slices // 10))
    mask[third, int(0.4 * size) : int(0.45 * size), int(0.3 * size) : int(0.35 * size)] = 2
    return hu, mask


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="rows and columns per slice")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--renders", type=int, default=60, help="first renders per kind")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="radseg-web-render-") as tmp:
        home = Path(tmp)
        platform = migrated_platform(load_settings({"home": home}, environ={}), autoload=False)
        started = time.perf_counter()
        hu, mask = phantom(args.slices, args.size)
        geometry = Geometry(
            (args.size, args.size, args.slices),
            (0.7, 0.7, 1.25),
            (-180.0, -180.0, 0.0),
            (1, 0, 0, 0, 1, 0, 0, 0, 1),
        )
        # uncompressed NIfTI: writing 300 MB through gzip would be most of the run
        volume_file = write_volume(platform.path("volumes", "bench.nii"), hu, geometry)
        mask_file = write_volume(platform.path("predictions", "bench.nii"), mask, geometry)
        del hu, mask
        print(f"volume written in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        classes = [{"id": 1, "name": "lung"}, {"id": 2, "name": "lesion"}]
        with platform.sessions.begin() as session:
            session.add(
                User(
                    username="reader",
                    password_hash=generate_password_hash("x", method="pbkdf2:sha256:1000"),
                    role=Role.CLINICIAN,
                )
            )
            series = Series(
                study=Study(study_instance_uid="2.25.1", patient_key="bench"),
                series_instance_uid="2.25.1.1",
                modality="CT",
                geometry=geometry.to_dict(),
                volume_path=platform.relative(volume_file),
            )
            version = nominal_model_version("bench", "bench", classes)
            prediction = Prediction(
                series=series, model_version=version, mask_path=platform.relative(mask_file)
            )
            session.add(prediction)
            session.flush()
            series_id, prediction_id = series.id, prediction.id

        app = create_app(platform, {"TESTING": True})
        client = app.test_client()
        log_in_as(client, platform, "reader")

        def timed(url: str) -> tuple[float, float]:
            cpu, wall = time.thread_time(), time.perf_counter()
            response = client.get(url)
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            assert response.status_code == 200, (url, response.get_data(as_text=True)[:200])
            return cpu * 1000, wall * 1000

        load_ms = timed(f"/series/{series_id}/slice/0.png")[1]
        load_ms += timed(f"/predictions/{prediction_id}/overlay/0.png")[1]

        rng = np.random.default_rng(7)
        counts = {"axial": args.slices, "coronal": args.size, "sagittal": args.size}
        kinds = {
            "axial slice": (f"/series/{series_id}/slice/{{i}}.png?wl=40&ww=400", "axial"),
            "coronal reformat": (
                f"/series/{series_id}/slice/coronal/{{i}}.png?wl=40&ww=400",
                "coronal",
            ),
            "sagittal reformat": (
                f"/series/{series_id}/slice/sagittal/{{i}}.png?wl=40&ww=400",
                "sagittal",
            ),
            "coronal overlay": (
                f"/predictions/{prediction_id}/overlay/coronal/{{i}}.png",
                "coronal",
            ),
            "sagittal overlay": (
                f"/predictions/{prediction_id}/overlay/sagittal/{{i}}.png",
                "sagittal",
            ),
        }
        results: dict[str, tuple[list[float], list[float]]] = {}
        for name, (template, plane) in kinds.items():
            # distinct indexes never asked before (slice 0 was the warm-up): all first renders
            indexes = rng.choice(np.arange(1, counts[plane]), size=args.renders, replace=False)
            cpu, wall = zip(*(timed(template.format(i=int(i))) for i in indexes), strict=True)
            results[name] = (list(cpu), list(wall))
        platform.close()

    print(f"\n## Viewer images, first render ({args.slices} × {args.size}² float32 series)\n")
    print(f"machine: {machine()}\n")
    print(f"volume and mask read into the volume cache: {load_ms:.0f} ms (once per process)\n")
    print("| image | renders | CPU p50 | CPU p95 | wall p50 | wall p95 | goal (CPU p95) | met |")
    print("|---|---:|---:|---:|---:|---:|---|:---:|")
    ok = True
    for name, (cpu, wall) in results.items():
        goal = AXIAL_GOAL_MS if name == "axial slice" else REFORMAT_GOAL_MS
        p95 = percentile(cpu, 95)
        met = p95 <= goal
        has_goal = "overlay" not in name
        print(
            f"| {name} | {len(cpu)} | {percentile(cpu, 50):.1f} ms | {p95:.1f} ms | "
            f"{percentile(wall, 50):.1f} ms | {percentile(wall, 95):.1f} ms | "
            f"{f'≤ {goal:g} ms' if has_goal else '–'} | "
            f"{('yes' if met else '**no**') if has_goal else '–'} |"
        )
        if has_goal:
            record(
                f"web_render: {name} first render, server CPU p95 ({args.size}², "
                f"{args.slices} slices)",
                f"≤ {goal:g} ms",
                f"{p95:.1f} ms",
                met,
            )
            ok = ok and met
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
