"""Mixed precision and multi-process ``launch`` without CUDA (v0.6 asserts CUDA in both).

``AMPTrainer`` autocasts on the device its model is on, through ``torch.autocast`` /
``torch.amp.GradScaler``: float16 with grad scaling on CUDA, bfloat16 without (it needs none) on
a CPU. ``launch``'s processes run the compat's own worker (:mod:`.compat`), which applies the
compat before anything imports detectron2, then v0.6's worker with CUDA or :func:`run_on_gloo`
without; ``create_ddp_model`` leaves out ``device_ids`` for CPU models. This module imports
neither torch nor detectron2 at import time.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["original_launch_worker", "patch_amp_trainer", "patch_launch", "run_on_gloo"]

#: what the patches replaced, for the wrappers that hand over to it
_originals: dict[str, Callable[..., Any]] = {}


def _model_device_type(model: Any) -> str:
    for param in model.parameters():
        return str(param.device.type)
    return "cpu"


def patch_amp_trainer() -> list[str]:
    """``AMPTrainer`` autocasts on its model's device (v0.6 asserts CUDA)."""
    import time

    import torch
    from detectron2.engine import train_loop

    trainer_cls = train_loop.AMPTrainer
    if getattr(trainer_cls, "_radseg_compat", False):
        return []

    def __init__(
        self: Any,
        model: Any,
        data_loader: Any,
        optimizer: Any,
        grad_scaler: Any = None,
        precision: torch.dtype | None = None,
    ) -> None:
        unsupported = "AMPTrainer does not support single-process multi-device training!"
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            assert not (model.device_ids and len(model.device_ids) > 1), unsupported
        assert not isinstance(model, torch.nn.DataParallel), unsupported
        train_loop.SimpleTrainer.__init__(self, model, data_loader, optimizer)
        self._amp_device = _model_device_type(model)
        on_cuda = self._amp_device == "cuda"
        if grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(self._amp_device, enabled=on_cuda)
        self.grad_scaler = grad_scaler
        self.precision = precision or (torch.float16 if on_cuda else torch.bfloat16)

    def run_step(self: Any) -> None:
        assert self.model.training, "[AMPTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with torch.autocast(device_type=self._amp_device, dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    trainer_cls.__init__ = __init__
    trainer_cls.run_step = run_step
    trainer_cls._radseg_compat = True
    return ["AMPTrainer: autocast on the model's device"]


def patch_launch(*, cuda: bool, worker: Callable[..., Any]) -> list[str]:
    """Each process ``launch`` starts runs ``worker`` (which applies the compat first); gloo and
    no ``device_ids`` without CUDA."""
    changed = []
    launch_module: Any = importlib.import_module("detectron2.engine.launch")
    if launch_module._distributed_worker is not worker:
        _originals["launch_worker"] = launch_module._distributed_worker
        launch_module._distributed_worker = worker
        changed.append("launch: each process applies the compat first; gloo without CUDA")
    defaults: Any = importlib.import_module("detectron2.engine.defaults")
    if not cuda and not getattr(defaults.create_ddp_model, "_radseg_compat", False):
        defaults.create_ddp_model = _cpu_aware_ddp(defaults.create_ddp_model)
        engine: Any = sys.modules["detectron2.engine"]
        engine.create_ddp_model = defaults.create_ddp_model
        changed.append("create_ddp_model: no device_ids for CPU models")
    return changed


def _cpu_aware_ddp(create_ddp_model: Callable[..., Any]) -> Callable[..., Any]:
    def create(model: Any, **kwargs: Any) -> Any:
        if _model_device_type(model) == "cpu":
            kwargs.setdefault("device_ids", None)  # DDP refuses device_ids for CPU modules
        return create_ddp_model(model, **kwargs)

    create._radseg_compat = True  # type: ignore[attr-defined]
    return create


def original_launch_worker() -> Callable[..., Any] | None:
    """v0.6's own ``_distributed_worker``, once :func:`patch_launch` replaced it (else ``None``)."""
    return _originals.get("launch_worker")


def run_on_gloo(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple[Any, ...],
    timeout: Any = None,
) -> None:
    """What v0.6's ``_distributed_worker`` does, on gloo and without pinning a device (no CUDA)."""
    import datetime

    import torch.distributed as dist
    from detectron2.utils import comm

    global_rank = machine_rank * num_gpus_per_machine + local_rank
    dist.init_process_group(
        backend="gloo",
        init_method=dist_url,
        world_size=world_size,
        rank=global_rank,
        timeout=timeout or datetime.timedelta(minutes=30),
    )
    if hasattr(comm, "create_local_process_group"):  # detectron2 > 0.6
        comm.create_local_process_group(num_gpus_per_machine)
    else:
        assert comm._LOCAL_PROCESS_GROUP is None
        num_machines = world_size // num_gpus_per_machine
        for i in range(num_machines):
            ranks = list(range(i * num_gpus_per_machine, (i + 1) * num_gpus_per_machine))
            group = dist.new_group(ranks)
            if i == machine_rank:
                comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
