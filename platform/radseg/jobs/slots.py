"""Which jobs a worker can start now, and which devices each one gets.

A worker started with ``--gpus 0,1 --concurrency 2`` has two GPU slots (one per listed device)
and two CPU slots. A job that needs ``gpus = n`` GPUs takes n free devices and sees exactly them
as ``CUDA_VISIBLE_DEVICES`` (detectron2's ``launch`` then starts one process per device); a
CPU-only job (``gpus = 0``) takes a CPU slot and sees no GPU (``CUDA_VISIBLE_DEVICES=""``), so it
can never take memory on a device a training job owns. A worker started without ``--gpus`` has
only CPU slots and runs every job in one, leaving ``CUDA_VISIBLE_DEVICES`` as it found it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Claimable:
    """One claim to make: up to ``limit`` jobs whose ``gpus`` lies in ``gpus`` (inclusive)."""

    limit: int
    gpus: tuple[int, int] | None


@dataclass
class Slots:
    gpus: tuple[str, ...] = ()
    concurrency: int = 1
    _gpu_holder: dict[str, int] = field(default_factory=dict)
    _cpu_holders: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if len(set(self.gpus)) != len(self.gpus):
            raise ValueError(f"a GPU is listed twice in {','.join(self.gpus)}")
        if self.concurrency < 0:
            raise ValueError("concurrency must be 0 or more")

    @property
    def free_gpus(self) -> list[str]:
        return [g for g in self.gpus if g not in self._gpu_holder]

    @property
    def free_cpu(self) -> int:
        return self.concurrency - len(self._cpu_holders)

    @property
    def busy(self) -> int:
        return len(self._cpu_holders) + len(set(self._gpu_holder.values()))

    def claimable(self) -> list[Claimable]:
        """What to ask the store for now: GPU jobs that fit the free devices, CPU jobs."""
        wanted = []
        free = len(self.free_gpus)
        if self.gpus and free:
            wanted.append(Claimable(limit=1, gpus=(1, free)))
        if self.free_cpu > 0:
            wanted.append(Claimable(limit=self.free_cpu, gpus=(0, 0) if self.gpus else None))
        return wanted

    def take(self, job_id: int, gpus: int) -> str | None:
        """Reserve a slot for ``job_id``; the ``CUDA_VISIBLE_DEVICES`` its process must see.

        ``None`` means "leave the variable alone" (a worker without GPUs). Raises
        ``LookupError`` if the slot is not free (the caller claimed more than fits).
        """
        if not self.gpus:
            gpus = 0
        if gpus == 0:
            if self.free_cpu <= 0:
                raise LookupError(f"no free CPU slot for job {job_id}")
            self._cpu_holders.add(job_id)
            return "" if self.gpus else None
        free = self.free_gpus
        if gpus > len(free):
            raise LookupError(f"job {job_id} needs {gpus} GPUs; {len(free)} free")
        devices = free[:gpus]
        for device in devices:
            self._gpu_holder[device] = job_id
        return ",".join(devices)

    def release(self, job_id: int) -> None:
        self._cpu_holders.discard(job_id)
        for device in [d for d, holder in self._gpu_holder.items() if holder == job_id]:
            del self._gpu_holder[device]
