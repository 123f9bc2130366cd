"""GPU check: the detectron2 backend picks the GPU by itself (``device="auto"``), trains with AMP
and predicts there. Run on a GPU machine from the repository root::

    PYTHONPATH=platform:plugins:. python tests/bench/gpu_backend.py

It needs detectron2 and the model extras importable (see docs/benchmarks.md for how a lent
device machine was given them). The numbers go to stdout and to ``$OUT/gpu_check.json``.
"""

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from radseg.contracts import PredictRequest, TrainRequest
from radseg_plugins.models.detectron2.backend import Detectron2Backend, resolve_device
from tests.integration.d2_fixtures import CLASSES, load_split_arrays, make_dataset_version

out = {
    "torch": torch.__version__,
    "cuda": torch.cuda.is_available(),
    "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    "auto_resolves_to": resolve_device("auto"),
}
tmp = Path(tempfile.mkdtemp())
ds = make_dataset_version(tmp / "ds", val=8)
backend = Detectron2Backend()
for arch in ("semantic_fpn",):
    t = time.perf_counter()
    res = backend.train(
        TrainRequest(
            dataset_dir=ds,
            output_dir=tmp / arch,
            classes=CLASSES,
            config={"architecture": arch, "iterations": 200, "amp": True},
            device="auto",
        ),
        lambda f, m: None,
    )
    out[f"{arch}_train_s"] = round(time.perf_counter() - t, 1)
    out[f"{arch}_val_mean_dice"] = res.metrics.get("val", {}).get("mean_dice")
    images, labels = load_split_arrays(ds, "val")
    big = np.concatenate([images] * 40)  # a volume-sized batch of slices
    req = PredictRequest(
        model_dir=res.weights.parent,
        weights=res.weights,
        config=res.config,
        classes=CLASSES,
        images=big,
        device="auto",
        batch_size=32,
    )
    backend.predict(req, lambda f, m: None)  # warm-up
    torch.cuda.synchronize()
    t = time.perf_counter()
    pred = backend.predict(req, lambda f, m: None)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    out[f"{arch}_predict_slices"] = int(big.shape[0])
    out[f"{arch}_predict_slices_per_s"] = round(big.shape[0] / dt, 1)
    out["gpu_mem_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
print(json.dumps(out, indent=1))
Path(os.environ.get("OUT", "/tmp"), "gpu_check.json").write_text(json.dumps(out, indent=1))
