"""``radseg train --machines 2`` through the queue: two ``radseg worker`` processes, each told
it is a machine of its own, join the job as a gang and train one detectron2 model together on
gloo and the CPU (rank 0's rendezvous from the job row), in the shared RADSEG_HOME; a machine
that dies fails the attempt for the group and the retry resumes from the last checkpoint."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from radseg.cli import main
from radseg.core import Platform
from radseg.db.models import Dataset, DatasetVersion, JobGangMember, JobState, ModelVersion
from radseg.jobs.logs import read_job_log
from radseg.roles import CLI_ACTOR
from radseg.workflows.training import request_training
from tests.integration.d2_fixtures import CLASSES, make_dataset_version, require_detectron2
from tests.integration.jobs_support import events, job, start_worker, wait_for
from tests.support import require

#: the training: tiny images, a handful of iterations, a checkpoint every two
OPTIONS = {"batch_size": 2, "num_workers": 0, "checkpoint_period": 2, "eval_period": 0}


def _requirements() -> None:
    require_detectron2()
    import torch

    require(not torch.cuda.is_available(), "gloo on the CPU is tested on a machine without CUDA")


def _dataset(platform: Platform) -> None:
    """A built dataset version ``gang`` (what ``radseg datasets build`` leaves)."""
    folder = platform.path("datasets", "gang", "v1")
    make_dataset_version(folder, train=4, val=2)
    with platform.sessions.begin() as session:
        session.add(
            DatasetVersion(
                dataset=Dataset(name="gang"),
                version=1,
                content_hash="0" * 64,
                classes=[{"id": c.id, "name": c.name, "color": list(c.color)} for c in CLASSES],
                recipe={},
                split={},
                path=platform.relative(folder),
            )
        )


def _train(platform: Platform, iterations: int) -> int:
    return request_training(
        platform,
        CLI_ACTOR,
        dataset="gang",
        backend="detectron2",
        architecture="semantic_fpn",
        iterations=iterations,
        options=OPTIONS,
        machines=2,
        gpus_per_machine=1,
    ).id


def _machine(platform: Platform, name: str, log: Path) -> subprocess.Popen[bytes]:
    return start_worker(
        platform,
        "--machine",
        name,
        lease_seconds=6.0,
        log=log,
        env={"RADSEG_GANG_ADDRESS": "127.0.0.1", "RADSEG_DEVICE": "cpu"},
    )


def _stop(*workers: subprocess.Popen[bytes] | None) -> None:
    for worker in workers:
        if worker is not None and worker.poll() is None:
            worker.kill()
        if worker is not None:
            worker.wait(timeout=30)


def _log(platform: Platform, job_id: int) -> str:
    return read_job_log(platform.settings, job_id, 0)[0]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_train_on_several_machines_from_the_command_line_queues_one_gang_job(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("detectron2" in platform.plugins.models, "the detectron2 plugin is not available")
    _dataset(platform)
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    args = ["--home", str(platform.home), "train", "--dataset", "gang", "--machines", "2"]
    result = CliRunner().invoke(main, [*args, "--gpus-per-machine", "2"])
    assert result.exit_code == 0, result.output
    assert result.output == "queued training job 1 on 2 machines\n"
    queued = job(platform, 1)
    assert (queued.kind, queued.machines, queued.gpus) == ("train", 2, 2)
    refused = CliRunner().invoke(main, [*args[:-1], "0"])
    assert refused.exit_code == 2 and "--machines" in refused.output


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_machines_train_one_model_through_the_queue(platform: Platform, tmp_path: Path) -> None:
    _requirements()
    _dataset(platform)
    job_id = _train(platform, iterations=2)
    workers = [_machine(platform, f"m{i}", tmp_path / f"w{i}.log") for i in (1, 2)]
    rank_1_done = re.compile(r"rank 1 of 2 on \S+ (finished its part|stopped: the attempt ended)")
    try:
        wait_for(lambda: job(platform, job_id).state.is_final, timeout=600, interval=0.5)
        wait_for(lambda: rank_1_done.search(_log(platform, job_id)), timeout=60)
    finally:
        _stop(*workers)
    done = job(platform, job_id)
    logs = {p.name: p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("w*.log")}
    assert done.state == JobState.SUCCEEDED, (done.message, _log(platform, job_id)[-3000:], logs)
    assert done.attempts == 1 and done.machines == 2
    assert done.result is not None and done.result["metrics"]["iterations"] == 2
    text = _log(platform, job_id)
    # both ranks ran, on two machines, meeting at the address rank 0 published
    assert done.rendezvous is not None
    meeting = f"MASTER_ADDR=127.0.0.1 MASTER_PORT={done.rendezvous['port']}"
    assert f"{meeting} NODE_RANK=0" in text and f"{meeting} NODE_RANK=1" in text
    started = [e[3] for e in events(platform, job_id) if e[1] == "running"]
    assert len(started) == 1 and " on m1" in started[0] and " on m2" in started[0]
    # one model version, recorded by rank 0, from the shared output folder
    with platform.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 1
        version = session.scalars(select(ModelVersion)).one()
        assert version.id == done.result["model_version_id"]
        assert session.scalar(select(func.count()).select_from(JobGangMember)) == 0
    assert platform.resolve(version.weights_path).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_dead_machine_makes_the_gang_retry_from_the_last_checkpoint(
    platform: Platform, tmp_path: Path
) -> None:
    _requirements()
    _dataset(platform)
    job_id = _train(platform, iterations=4)
    checkpoint = platform.path("models", f"job-{job_id}", "last_checkpoint")
    one, two = (_machine(platform, f"m{i}", tmp_path / f"w{i}.log") for i in (1, 2))
    three = None
    try:
        wait_for(checkpoint.is_file, timeout=600, interval=0.2)
        two.send_signal(signal.SIGKILL)  # machine m2 dies, and its rank with it
        back = wait_for(
            lambda: [e for e in events(platform, job_id) if e[:2] == ("running", "queued")],
            timeout=120,
        )
        three = _machine(platform, "m3", tmp_path / "w3.log")  # a machine takes m2's place
        wait_for(lambda: job(platform, job_id).state.is_final, timeout=600, interval=0.5)
    finally:
        _stop(one, two, three)
    done = job(platform, job_id)
    logs = {p.name: p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("w*.log")}
    assert done.state == JobState.SUCCEEDED, (done.message, _log(platform, job_id)[-3000:], logs)
    assert done.attempts == 2, events(platform, job_id)
    assert back[0][3]  # why the first attempt ended: a rank failed, or a lease expired
    started = [e[3] for e in events(platform, job_id) if e[1] == "running"]
    assert " on m2" in started[0] and " on m3" in started[1] and " on m1" in started[1]
    # the retry resumed from the first attempt's checkpoint, not from iteration 0
    assert done.result is not None
    assert done.result["metrics"]["start_iteration"] > 0
    assert done.result["metrics"]["iterations"] == 4
