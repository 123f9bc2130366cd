"""Channel recipes: CT windows and neighbouring slices as uint8 channels."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from radseg.errors import InputError
from radseg.imaging.channels import WINDOW_PRESETS, Channel, ChannelRecipe, hu_to_channels


def reference_window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    scaled = (hu.astype(np.float64) - (level - width / 2)) / width * 255.0
    return np.floor(np.clip(scaled, 0, 255) + 0.5).astype(np.uint8)


def test_presets_have_the_usual_values() -> None:
    assert WINDOW_PRESETS["brain"] == (80, 40)
    assert WINDOW_PRESETS["soft_tissue"] == (400, 40)
    assert WINDOW_PRESETS["lung"] == (1500, -600)
    assert WINDOW_PRESETS["bone"] == (1800, 400)
    assert WINDOW_PRESETS["liver"] == (150, 30)


def test_default_recipe_is_soft_tissue_lung_bone() -> None:
    recipe = ChannelRecipe()
    assert [c.name for c in recipe.channels] == ["soft_tissue", "lung", "bone"]
    assert recipe.num_channels == 3


def test_window_edges_map_to_0_mid_and_255() -> None:
    hu = np.array([[[-1000.0, -160.0, 40.0, 240.0, 3000.0]]], dtype=np.float32)
    out = hu_to_channels(hu, ChannelRecipe.from_presets("soft_tissue"))
    assert out.shape == (1, 1, 5, 1)
    assert out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_matches_a_reference_implementation_for_every_preset() -> None:
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1100, 2000, size=(5, 17, 23)).astype(np.float32)
    recipe = ChannelRecipe.from_presets(*WINDOW_PRESETS)
    out = hu_to_channels(hu, recipe)
    assert out.shape == (5, 17, 23, len(WINDOW_PRESETS))
    for c, (width, level) in enumerate(WINDOW_PRESETS.values()):
        diff = np.abs(out[..., c].astype(int) - reference_window(hu, width, level))
        assert diff.max() <= 1  # float32 vs float64 rounding at .5 only
        assert np.mean(diff == 0) > 0.99


def test_custom_windows_and_neighbouring_slices() -> None:
    hu = np.arange(4, dtype=np.float32)[:, None, None] * 100 + np.zeros((4, 2, 3), np.float32)
    recipe = ChannelRecipe(
        (Channel("custom", 400, 200, -1), Channel("custom", 400, 200, 0), Channel("c", 400, 200, 1))
    )
    out = hu_to_channels(hu, recipe)
    centre = reference_window(hu, 400, 200)
    np.testing.assert_array_equal(out[..., 1], centre)
    np.testing.assert_array_equal(out[..., 0], centre[[0, 0, 1, 2]])  # clamped at the start
    np.testing.assert_array_equal(out[..., 2], centre[[1, 2, 3, 3]])  # and at the end
    neighbours = ChannelRecipe.neighbours("soft_tissue")
    assert [c.offset for c in neighbours.channels] == [-1, 0, 1]


def test_recipe_round_trips_through_json() -> None:
    recipe = ChannelRecipe(
        (Channel.preset("lung"), Channel("narrow", 50.5, 35.0, 2), Channel.preset("bone", -1))
    )
    data = json.loads(json.dumps(recipe.to_dict()))
    assert ChannelRecipe.from_dict(data) == recipe
    by_name = ChannelRecipe.from_dict({"channels": ["brain", {"name": "liver", "offset": 1}]})
    assert by_name.channels == (Channel("brain", 80, 40), Channel("liver", 150, 30, 1))
    assert hash(ChannelRecipe.from_dict(data)) == hash(recipe)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.channels = ()  # type: ignore[misc]


def test_invalid_recipes_are_refused() -> None:
    with pytest.raises(InputError, match=r"unknown window preset 'abdomen'.*soft_tissue"):
        Channel.preset("abdomen")
    with pytest.raises(InputError, match="width must be > 0"):
        Channel("bad", 0, 40)
    with pytest.raises(InputError, match="at least one channel"):
        ChannelRecipe(())
    with pytest.raises(InputError, match="both width and level"):
        Channel.from_dict({"name": "x", "width": 10})
    with pytest.raises(InputError, match="expected an HU volume"):
        hu_to_channels(np.zeros((4, 4), np.float32))


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_channel_slices_give_hu_to_channels_slice_by_slice(dtype: type) -> None:
    """What a dataset build writes slice by slice is the whole-volume mapping, for every named
    recipe (percentile windows and neighbouring slices included) and the cache's dtypes."""
    from radseg.imaging.channels import RECIPES, channel_slices

    rng = np.random.default_rng(5)
    hu = rng.normal(0, 600, (6, 9, 7)).round().astype(dtype)
    if dtype is np.float64:
        hu += 0.37  # fractional HU: the float path
    recipes = [
        *RECIPES.values(),
        ChannelRecipe((Channel("below", 400, 40, -1), Channel("above", 80, 40, 2))),
    ]
    for recipe in recipes:
        whole = hu_to_channels(hu, recipe)
        one = channel_slices(hu, recipe)
        for z in range(hu.shape[0]):
            np.testing.assert_array_equal(one(z), whole[z])
