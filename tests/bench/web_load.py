"""Load on the viewer's image endpoints: gunicorn on loopback, 20 concurrent clients.

``python -m tests.bench.web_load [--size 512] [--slices 40] [--requests 600] [--clients 20]``

One synthetic CT series is ingested (real DICOM through the dicom-folder plugin) with a
prediction mask; gunicorn serves ``radseg.web:create_app()``; 20 client threads, each with its
own keep-alive connection and an API token, fetch slice PNGs (windowed) and overlay PNGs of
varying slices, without conditional headers, so every answer is a full 200 with the PNG (after
a warm-up, which renders each slice once per gunicorn worker, they come from the per-process
image cache, as when reviewers scroll through a series). In the same run,
Orthanc (Debian's, started by ``tests/orthanc.py``) holds the same DICOM files and serves
``/instances/{id}/preview`` of the same slices to the same 20 clients: the reference.
Prints a Markdown table (latency percentiles, throughput, ratio to Orthanc).
"""

from __future__ import annotations

import argparse
import os
import platform as stdlib_platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import requests

from radseg import users
from radseg.contracts import Geometry
from radseg.core import create_platform
from radseg.db.migrate import upgrade
from radseg.db.models import (
    Prediction,
    Role,
    Series,
)
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.imaging.volumes import read_volume, write_volume
from radseg.settings import load_settings
from radseg.workflows.ingest import ingest
from tests.bench.summary import record
from tests.orthanc import orthanc_available, orthanc_server
from tests.support import nominal_model_version

P95_TARGET_MS = 50.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(
    home: Path, size: int, slices: int, database_url: str | None = None
) -> tuple[int, int, str, list[Path]]:
    """Ingest a synthetic series and add a prediction; (series id, prediction id, token,
    DICOM files sorted by slice position)."""
    source = write_synthetic_ct(home.parent / "source", shape=(slices, size, size), seed=1)
    dicom_dir = home.parent / "source" / "dicom"
    overrides: dict[str, object] = {"home": home}
    if database_url:
        overrides["database_url"] = database_url
    settings = load_settings(overrides, environ={})
    platform = create_platform(settings)
    upgrade(platform.engine)
    platform.ensure_home()
    ingest(platform, dicom_dir)
    with platform.sessions.begin() as session:
        series = session.query(Series).one()
        labels, _ = read_volume(home.parent / "source" / "labels.nii.gz")
        mask_file = platform.path("predictions", "bench.nii.gz")
        write_volume(mask_file, labels.astype(np.uint8), Geometry.from_dict(series.geometry))
        classes = [{"id": c, "name": f"organ {c}"} for c in range(1, int(labels.max()) + 1)]
        version = nominal_model_version("bench", "bench", classes, weights_path="models/bench.pth")
        prediction = Prediction(
            series=series, model_version=version, mask_path=platform.relative(mask_file)
        )
        session.add(prediction)
        user = users.create_user(session, "bench", "bench password", Role.CLINICIAN)
        _, token = users.create_token(session, user, "bench")
        session.flush()
        ids = (series.id, prediction.id)
    platform.close()
    del source

    def position(path: Path) -> float:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return float(ds.ImagePositionPatient[2])

    files = sorted((p for p in dicom_dir.iterdir() if p.is_file()), key=position)
    return ids[0], ids[1], token, files


def load(
    urls: list[str], clients: int, total: int, headers: dict[str, str]
) -> tuple[np.ndarray, float]:
    """Latencies (ms) of ``total`` GETs spread over ``clients`` threads; wall seconds."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = total // clients
    errors: list[str] = []

    def client(n: int) -> None:
        session = requests.Session()
        mine = []
        for i in range(per_client):
            url = urls[(n * 7 + i) % len(urls)]
            start = time.perf_counter()
            response = session.get(url, headers=headers, timeout=60)
            _ = response.content
            mine.append((time.perf_counter() - start) * 1000)
            if response.status_code != 200:
                errors.append(f"{url}: {response.status_code}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return np.array(latencies), time.perf_counter() - start


def server_cpu_seconds(master_pid: int) -> float:
    """CPU seconds used so far by a process's children (gunicorn's workers), from /proc:
    unlike latency, this does not depend on what else the machine is running."""
    tick = os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    total = 0.0
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=10).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="rows and columns per slice")
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--requests", type=int, default=600, help="per endpoint")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="gunicorn threads per worker (1: the sync worker docs/operations.md recommends)",
    )
    parser.add_argument(
        "--database-url",
        help="e.g. postgresql+psycopg://postgres@127.0.0.1/bench (an empty "
        "database; default: SQLite under the temporary RADSEG_HOME)",
    )
    args = parser.parse_args(argv)
    problem = orthanc_available()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1

    load_before = os.getloadavg()[0]  # on a shared machine, other processes' CPU use counts
    with tempfile.TemporaryDirectory(prefix="radseg-web-load-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        series_id, prediction_id, token, files = prepare(
            home, args.size, args.slices, args.database_url
        )
        port = _free_port()
        env = {**os.environ, "RADSEG_HOME": str(home)}
        if args.database_url:
            env["RADSEG_DATABASE_URL"] = args.database_url
        gunicorn = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("gunicorn")),
                "--workers", str(args.workers),
                "--threads", str(args.threads),
                "--bind", f"127.0.0.1:{port}",
                "--log-level", "warning",
                "radseg.web:create_app()",
            ],
            env=env,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_for(f"{base}/-/health")
            headers = {"Authorization": f"Bearer {token}"}
            zs = list(range(args.slices))
            radseg_cases: dict[str, list[str]] = {
                "slice PNG (radseg)": [
                    f"{base}/series/{series_id}/slice/{z}.png?wl=40&ww=400" for z in zs
                ],
                "overlay PNG (radseg)": [
                    f"{base}/predictions/{prediction_id}/overlay/{z}.png" for z in zs
                ],
            }
            results: dict[str, tuple[np.ndarray, float]] = {}
            cpu_ms: dict[str, float] = {}
            for name, urls in radseg_cases.items():
                load(urls, args.clients, args.clients * 4, headers)  # every worker reads once
                before = server_cpu_seconds(gunicorn.pid)
                results[name] = load(urls, args.clients, args.requests, headers)
                used = server_cpu_seconds(gunicorn.pid) - before
                cpu_ms[name] = used * 1000 / len(results[name][0])

            with orthanc_server(Path(tmp) / "orthanc") as pacs:
                ids = [pacs.upload(f)["ID"] for f in files]
                previews = [f"{pacs.url}/instances/{i}/preview" for i in ids]
                load(previews, args.clients, args.clients * 2, {})
                results["Orthanc /instances/{id}/preview"] = load(
                    previews, args.clients, args.requests, {}
                )
        finally:
            gunicorn.terminate()
            gunicorn.wait(timeout=30)

    reference = results["Orthanc /instances/{id}/preview"]
    ref_p95 = float(np.percentile(reference[0], 95))
    print(
        f"\n{args.clients} concurrent clients, {args.requests} requests per endpoint, "
        f"{args.slices} slices of {args.size}², gunicorn {args.workers} workers × "
        f"{args.threads} threads; {stdlib_platform.processor() or stdlib_platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} before the run, "
        f"database {'PostgreSQL' if args.database_url else 'SQLite'}\n"
    )
    print(
        "| endpoint | p50 ms | p95 ms | p99 ms | req/s | server CPU ms/req "
        "| p95 vs Orthanc | p95 ≤ 50 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|:---:|")
    for name, (latencies, wall) in results.items():
        p50, p95, p99 = (float(np.percentile(latencies, q)) for q in (50, 95, 99))
        verdict = "yes" if p95 <= P95_TARGET_MS else "no"
        print(
            f"| {name} | {p50:.1f} | {p95:.1f} | {p99:.1f} | {len(latencies) / wall:.0f} "
            f"| {cpu_ms[name]:.1f} | {p95 / ref_p95:.2f}× | {verdict} |"
            if name in cpu_ms
            else f"| {name} | {p50:.1f} | {p95:.1f} | {p99:.1f} | {len(latencies) / wall:.0f} "
            f"| – | {p95 / ref_p95:.2f}× | {verdict} |"
        )
    for name in cpu_ms:  # radseg's endpoints
        p95 = float(np.percentile(results[name][0], 95))
        shown = f"{p95:.1f} ms ({p95 / ref_p95:.2f}× Orthanc)"
        record(f"web_load: {name} p95, 20 clients", "≤ 50 ms", shown, p95 <= P95_TARGET_MS)
    return 0


def run(fn: Callable[[], int]) -> None:
    raise SystemExit(fn())


if __name__ == "__main__":
    run(main)
