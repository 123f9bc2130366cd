"""detectron2 training across machines: two processes on this machine act as two machines,
each running its rank of ``launch(num_machines=2, machine_rank, dist_url)`` on gloo and the CPU,
meeting at rank 0's address from ``NODE_RANK``/``MASTER_ADDR``/``MASTER_PORT``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from radseg.errors import InputError
from radseg_plugins.models.detectron2.training import machine_rank
from tests.integration.d2_fixtures import make_dataset_version, require_detectron2
from tests.support import require

REPO = Path(__file__).resolve().parents[2]

#: what each "machine" runs: the backend's train, as a worker's job process would
MACHINE = """
import json, sys
from pathlib import Path
from radseg.contracts import TrainRequest
from radseg_plugins.models.detectron2 import Detectron2Backend
from tests.integration.d2_fixtures import CLASSES

dataset, output, report, config = sys.argv[1:5]
messages = []
request = TrainRequest(
    dataset_dir=Path(dataset), output_dir=Path(output), classes=CLASSES, config=json.loads(config)
)
result = Detectron2Backend().train(request, lambda f, m: messages.append(m))
Path(report).write_text(json.dumps(
    {"iterations": result.iterations, "weights": str(result.weights), "messages": messages}
))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_machines_train_one_model_on_gloo(tmp_path: Path) -> None:
    require_detectron2()
    import torch

    require(not torch.cuda.is_available(), "gloo on the CPU is tested on a machine without CUDA")
    dataset = make_dataset_version(tmp_path / "dataset", train=4, val=2)
    output = tmp_path / "shared" / "model"  # the shared RADSEG_HOME of a real pair of machines
    config = {
        "architecture": "semantic_fpn",
        "iterations": 2,
        "batch_size": 2,
        "num_workers": 0,
        "num_gpus": 1,
        "num_machines": 2,
    }
    port = str(_free_port())
    pythonpath = os.pathsep.join([str(REPO), str(REPO / "platform"), str(REPO / "plugins")])
    machines = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "NODE_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "PYTHONPATH": pythonpath,
        }
        args = [str(dataset), str(output), str(tmp_path / f"rank{rank}.json"), json.dumps(config)]
        log = (tmp_path / f"rank{rank}.log").open("wb")
        machines.append(
            subprocess.Popen(
                [sys.executable, "-c", MACHINE, *args], env=env, stdout=log, stderr=log
            )
        )
    try:
        codes = [m.wait(timeout=600) for m in machines]
    finally:
        for m in machines:
            if m.poll() is None:
                m.kill()
    logs = {r: (tmp_path / f"rank{r}.log").read_text(errors="replace")[-3000:] for r in (0, 1)}
    assert codes == [0, 0], logs
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, report in enumerate(reports):
        assert report["iterations"] == 2
        assert report["messages"][0] == f"training in 1 processes on machine {rank} of 2"
        assert (
            report["messages"][-1] == f"trained 2 iterations in 1 processes on machine {rank} of 2"
        )
    # one model: rank 0 wrote it to the shared folder, and both machines return it
    assert reports[0]["weights"] == reports[1]["weights"] == str(output / "model_final.pth")
    assert (output / "model_final.pth").is_file()


def test_several_machines_need_their_rank_and_rank_0_s_address() -> None:
    assert machine_rank(1, {}) == (0, "auto")
    env = {"NODE_RANK": "1", "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29500"}
    assert machine_rank(2, env) == (1, "tcp://10.0.0.5:29500")
    with pytest.raises(InputError, match="needs MASTER_ADDR, MASTER_PORT in the environment"):
        machine_rank(2, {"NODE_RANK": "0"})
    with pytest.raises(InputError, match="NODE_RANK 2 is not a rank of 2 machines"):
        machine_rank(2, {**env, "NODE_RANK": "2"})
    with pytest.raises(InputError, match="must be whole numbers"):
        machine_rank(2, {**env, "MASTER_PORT": "http"})
    with pytest.raises(InputError, match="MASTER_PORT 0 is not a TCP port"):
        machine_rank(2, {**env, "MASTER_PORT": "0"})
