"""Class colours: distinguishable for hundreds of classes, and the given ones kept everywhere.

Distances are measured with scikit-image's CIEDE2000 (an implementation independent of
:mod:`radseg.imaging.palette`); about 2.3 is a just noticeable difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from radseg.contracts import ClassInfo
from radseg.imaging.label_sources import read_label_source
from radseg.imaging.labels import classes_for_labels, read_class_map
from radseg.imaging.palette import (
    PALETTE,
    ciede2000,
    class_color,
    generate_palette,
    is_generated,
    srgb_to_lab,
)
from radseg.imaging.synthetic import SyntheticStudy, write_synthetic_ct
from radseg.web.render import labels_to_rgba, legend
from radseg_plugins.exporters.png import colour_table
from tests.dicom_labels import write_rtstruct, write_seg
from tests.support import require_module


@pytest.fixture(scope="module")
def color() -> object:
    return require_module("skimage.color")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    return write_synthetic_ct(tmp_path_factory.mktemp("study"), shape=(4, 32, 32), seed=12)


def closest_pair(color: object, rgb: np.ndarray) -> float:
    lab = color.rgb2lab(np.asarray(rgb, dtype=np.float64)[None] / 255.0)[0]  # type: ignore[attr-defined]
    i, j = np.triu_indices(len(lab), 1)
    return float(color.deltaE_ciede2000(lab[i], lab[j]).min())  # type: ignore[attr-defined]


def test_254_classes_get_distinct_colours_far_from_each_other_and_from_grey(
    color: object,
) -> None:
    assert len(PALETTE) == 254 and len(set(PALETTE)) == 254
    assert [class_color(i) for i in range(1, 255)] == list(PALETTE)
    # The closest pair among the first n classes: the first classes are the most distinct.
    assert closest_pair(color, np.asarray(PALETTE[:10])) > 20
    assert closest_pair(color, np.asarray(PALETTE[:116])) > 9  # a whole-body atlas
    assert closest_pair(color, np.asarray(PALETTE)) > 6
    # No class colour looks like a grey of the CT under it.
    lab = color.rgb2lab(np.asarray(PALETTE, dtype=np.float64)[None] / 255.0)[0]  # type: ignore[attr-defined]
    greys = color.rgb2lab(np.repeat(np.linspace(0, 1, 256)[:, None], 3, axis=1)[None])[0]  # type: ignore[attr-defined]
    to_grey = color.deltaE_ciede2000(lab[:, None, :], greys[None, :, :]).min()  # type: ignore[attr-defined]
    assert to_grey > 6


def test_the_stored_palette_is_what_the_generator_makes() -> None:
    assert generate_palette() == PALETTE


def test_the_colour_maths_agrees_with_scikit_image(color: object) -> None:
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 256, (2, 2000, 3))
    lab_a, lab_b = srgb_to_lab(a), srgb_to_lab(b)
    reference_a = color.rgb2lab(a[None] / 255.0)[0]  # type: ignore[attr-defined]
    reference_b = color.rgb2lab(b[None] / 255.0)[0]  # type: ignore[attr-defined]
    np.testing.assert_allclose(lab_a, reference_a, atol=1e-9)
    np.testing.assert_allclose(
        ciede2000(lab_a, lab_b),
        color.deltaE_ciede2000(reference_a, reference_b),  # type: ignore[attr-defined]
        atol=1e-9,
    )


def test_a_116_class_atlas_without_colours_is_drawn_in_116_colours() -> None:
    labels = np.arange(117, dtype=np.uint8).reshape(1, 9, 13)
    classes = classes_for_labels(labels)
    assert len({c.color for c in classes}) == 116
    # the viewer (legend and overlay) and the PNG export use the same colours
    entries = legend([{"id": c.id, "name": c.name} for c in classes])
    assert [e.color for e in entries] == [c.color for c in classes]
    rgba = labels_to_rgba(labels[0], [])
    assert len({tuple(p) for p in rgba.reshape(-1, 4)[1:]}) == 116
    table = colour_table(classes)
    assert [tuple(table[c.id]) for c in classes] == [c.color for c in classes]


def test_class_map_colours_win_then_the_sources_then_the_palette(
    study: SyntheticStudy, tmp_path: Path
) -> None:
    seg = write_seg(study.files, study.labels, study.classes, tmp_path / "seg.dcm")
    own = {c.name: read_label_source(seg, study.geometry).classes[i].color
           for i, c in enumerate(study.classes)}  # fmt: skip
    names_only = read_class_map({str(c.id): c.name for c in study.classes})
    assert all(is_generated(c.color) for c in names_only)
    # a class map without colours: the SEG's recommended display colours are kept
    kept = read_label_source(seg, study.geometry, classes=names_only).classes
    assert {c.name: c.color for c in kept} == own
    # a class map with a colour: that colour wins for that class, the SEG's for the others
    entries = [{"id": c.id, "name": c.name} for c in study.classes]
    entries[0]["color"] = [1, 2, 3]
    chosen = read_label_source(seg, study.geometry, classes=read_class_map(entries)).classes
    assert chosen[0].color == (1, 2, 3)
    assert {c.name: c.color for c in chosen[1:]} == {n: own[n] for n in list(own)[1:]}


def test_label_objects_without_display_colours_get_distinct_palette_colours(
    study: SyntheticStudy, tmp_path: Path
) -> None:
    seg = write_seg(study.files, study.labels, study.classes, tmp_path / "seg.dcm")
    ds = pydicom.dcmread(seg)
    for item in ds.SegmentSequence:
        del item.RecommendedDisplayCIELabValue
    ds.save_as(seg)
    rt = write_rtstruct(study.files, study.labels, study.classes, tmp_path / "rt.dcm")
    ds = pydicom.dcmread(rt)
    for item in ds.ROIContourSequence:
        del item.ROIDisplayColor
    ds.save_as(rt)
    for path in (seg, rt):
        classes = read_label_source(path, study.geometry).classes
        assert [c.color for c in classes] == [class_color(c.id) for c in classes], path.name
        assert len({c.color for c in classes}) == len(classes) > 1


def test_generated_colours_behave_as_plain_tuples() -> None:
    generated = class_color(3)
    assert generated == PALETTE[2] and hash(generated) == hash(PALETTE[2])
    assert list(generated) == list(PALETTE[2]) and is_generated(generated)
    assert not is_generated(PALETTE[2]) and not is_generated(ClassInfo(1, "a", (1, 2, 3)).color)
