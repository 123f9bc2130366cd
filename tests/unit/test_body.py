"""Where the body is in a CT volume (radseg.imaging.body), and who is told: the host gives a
backend each CT slice's box of everything denser than air, and no boxes for other modalities."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from radseg.contracts import PredictRequest
from radseg.imaging.body import body_boxes, has_body
from radseg.imaging.channels import ChannelRecipe
from radseg.workflows.prediction import ModelRun


def air(shape: tuple[int, int, int] = (4, 32, 40)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (-1000.0 + rng.normal(0.0, 30.0, shape)).astype(np.float32)


def test_slices_of_air_have_no_box_and_the_body_its_exact_box() -> None:
    hu = air()
    hu[1:3, 5:20, 8:30] = 40.0  # soft tissue on slices 1 and 2
    hu[1:3, 8:12, 10:16] = -850.0  # a lung inside it: still inside the box
    boxes = body_boxes(hu)
    assert boxes.tolist() == [[0, 0, 0, 0], [5, 20, 8, 30], [5, 20, 8, 30], [0, 0, 0, 0]]
    assert has_body(boxes).tolist() == [False, True, True, False]


def test_the_table_and_a_separate_limb_are_kept_and_specks_are_not() -> None:
    hu = air((2, 40, 40))
    hu[:, 10:25, 10:30] = 0.0  # the trunk
    hu[:, 12:20, 34:38] = 0.0  # an arm, apart from the trunk
    hu[:, 33:37, 2:39] = 200.0  # the table, below, apart from both
    hu[0, 2, 3] = hu[0, 2, 4] = 300.0  # two dense voxels in the air: noise, not body
    hu[1, 38, 38] = 1000.0
    assert body_boxes(hu).tolist() == [[10, 37, 2, 39], [10, 37, 2, 39]]


def test_an_hu_volume_is_three_dimensional() -> None:
    with pytest.raises(ValueError, match=r"\(z, y, x\)"):
        body_boxes(np.zeros((4, 4)))


class Capture:
    """A model backend that answers background and keeps the request it was given."""

    name = "capture"
    architectures = ("capture",)

    def __init__(self) -> None:
        self.requests: list[PredictRequest] = []

    def train(self, request: Any, progress: Any) -> Any:
        raise NotImplementedError

    def predict(self, request: PredictRequest, progress: Any) -> np.ndarray:
        self.requests.append(request)
        return np.zeros(request.images.shape[:3], np.uint8)


@pytest.mark.parametrize(("modality", "told"), [("CT", True), ("MR", False), ("", False)])
def test_only_a_ct_series_comes_with_body_boxes(modality: str, told: bool) -> None:
    backend = Capture()
    platform: Any = SimpleNamespace(
        plugins=SimpleNamespace(model_backend=lambda name: backend),
        settings=SimpleNamespace(device="cpu"),
    )
    run = ModelRun("capture", {}, [], ChannelRecipe(), Path("model_final.pth"))
    hu = air()
    hu[2, 4:9, 5:9] = 60.0
    run.predict(platform, hu, lambda f, m: None, modality=modality)
    (request,) = backend.requests
    if told:
        assert request.body_boxes is not None
        assert request.body_boxes.tolist() == [[0, 0, 0, 0]] * 2 + [[4, 9, 5, 9], [0, 0, 0, 0]]
    else:
        assert request.body_boxes is None
