"""GPU and CPU slots: which devices each job's process sees, without needing a GPU."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from radseg.core import Platform
from radseg.db.models import JobEvent, JobState
from radseg.jobs.slots import Claimable, Slots
from radseg.jobs.worker import Worker
from tests.integration.jobs_support import job, submit


def test_slots_hand_out_distinct_devices_and_take_them_back() -> None:
    slots = Slots(gpus=("0", "1", "2"), concurrency=2)
    assert slots.claimable() == [Claimable(limit=1, gpus=(1, 3)), Claimable(limit=2, gpus=(0, 0))]
    assert slots.take(10, 2) == "0,1"
    assert slots.claimable()[0] == Claimable(limit=1, gpus=(1, 1))  # a 2-GPU job no longer fits
    assert slots.take(11, 1) == "2"
    assert slots.take(12, 0) == ""  # CPU-only jobs see no GPU on a GPU worker
    with pytest.raises(LookupError, match="needs 1 GPUs; 0 free"):
        slots.take(13, 1)
    assert slots.claimable() == [Claimable(limit=1, gpus=(0, 0))]
    slots.release(10)
    assert slots.free_gpus == ["0", "1"] and slots.busy == 2
    with pytest.raises(ValueError, match="listed twice"):
        Slots(gpus=("0", "0"))


def test_a_worker_without_gpus_runs_every_job_in_a_cpu_slot() -> None:
    slots = Slots(concurrency=1)
    assert slots.claimable() == [Claimable(limit=1, gpus=None)]
    assert slots.take(1, 4) is None  # CUDA_VISIBLE_DEVICES left as the worker found it
    assert slots.claimable() == []


def _interval(platform: Platform, job_id: int) -> tuple:
    with platform.sessions() as session:
        stamps = {
            e.to_state: e.created_at
            for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job_id))
        }
    return stamps["running"], stamps["succeeded"]


def test_each_job_process_sees_the_gpus_it_was_given(pg_platform: Platform) -> None:
    platform = pg_platform
    both = submit(platform, payload={"sleep": 0.5}, gpus=2)
    one = submit(platform, payload={"sleep": 0.5}, gpus=1)
    cpu = submit(platform, payload={"sleep": 0.5}, gpus=0)
    too_big = submit(platform, payload={}, gpus=3)
    Worker(platform, burst=True, gpus=("0", "1"), concurrency=1).run()
    seen = {j: job(platform, j).result["cuda_visible_devices"] for j in (both, one, cpu)}
    assert seen == {both: "0,1", one: "0", cpu: ""}
    # the two-GPU job had both devices to itself: the one-GPU job ran before or after it
    (a_start, a_end), (b_start, b_end) = _interval(platform, both), _interval(platform, one)
    assert a_end <= b_start or b_end <= a_start
    assert job(platform, too_big).state == JobState.QUEUED  # waits for a worker with 3 GPUs
