"""Class colours that stay distinguishable for hundreds of classes, and where colours come from.

A class's colour is, first to last: the one its class map gives (``"color": [r, g, b]``), the one
its label source stores (a DICOM SEG's RecommendedDisplayCIELabValue, a Slicer ``.seg.nrrd``
segment colour, an RTSTRUCT's ROIDisplayColor), else :func:`class_color` of its id. A colour from
:func:`class_color` is a :class:`GeneratedColor`, so code that merges a class map with a source
can tell a chosen colour from a filled-in one (:func:`is_generated`).

The palette is a Glasbey-style greedy max-min selection (Glasbey et al., "Colour displays for
categorical images", 2007) with CIEDE2000 as the distance: from the sRGB colours on a grid of 8
levels per channel, with CIE L* 30-95 and chroma at least 10 (legible over a grey CT slice), each
colour is the candidate farthest from all colours chosen before it, and from nine greys from black
to white, so no class looks like the image under it. The first classes get the most distinct
colours: over 10 classes the closest pair is about ΔE00 26 apart, over 116 about 10, over all 254
about 7 (``tests/unit/test_palette.py`` checks with scikit-image's CIEDE2000; about 2.3 is a just
noticeable difference). :data:`PALETTE` is the generator's output, stored so that every process
gets the same colours without the two seconds the search takes; the test regenerates it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "PALETTE",
    "GeneratedColor",
    "ciede2000",
    "class_color",
    "generate_palette",
    "is_generated",
    "srgb_to_lab",
]

_LEVELS = 8  # grid step in sRGB levels; finer grids took longer and gained under 0.2 ΔE00
_LIGHTNESS = (30.0, 95.0)  # CIE L*: darker colours vanish on dark tissue, lighter ones on bone
_MIN_CHROMA = 10.0
_GREYS = 9
_D65 = (0.95047, 1.0, 1.08883)


class GeneratedColor(tuple[int, int, int]):
    """An ``(r, g, b)`` the palette filled in because no class map or source gave one.

    It compares, hashes and serialises as the plain tuple; only :func:`is_generated` tells it
    apart, so a source's own colour can replace it when a class map is merged with the source.
    """

    __slots__ = ()

    def __new__(cls, rgb: Any) -> GeneratedColor:
        r, g, b = (int(v) for v in rgb)
        return super().__new__(cls, (r, g, b))


def is_generated(color: tuple[int, int, int]) -> bool:
    """Whether ``color`` was filled in by :func:`class_color` rather than given."""
    return isinstance(color, GeneratedColor)


def class_color(class_id: int) -> GeneratedColor:
    """The palette colour of class ``class_id`` (1-254; other ids wrap around)."""
    return GeneratedColor(PALETTE[(int(class_id) - 1) % len(PALETTE)])


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65, 2°) of sRGB colours ``(..., 3)`` given as 0-255."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    r, g, b = lin[..., 0], lin[..., 1], lin[..., 2]
    # Written out rather than a matrix product, so no BLAS summation order enters the result.
    xyz = (
        (0.412453 * r + 0.357580 * g + 0.180423 * b) / _D65[0],
        (0.212671 * r + 0.715160 * g + 0.072169 * b) / _D65[1],
        (0.019334 * r + 0.119193 * g + 0.950227 * b) / _D65[2],
    )
    fx, fy, fz = (np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16.0 / 116.0) for t in xyz)
    return np.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), axis=-1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1) of L*a*b* colours, broadcast over ``...``.

    Sharma, Wu and Dalal, "The CIEDE2000 color-difference formula: implementation notes,
    supplementary test data, and mathematical observations" (2005).
    """
    lab1, lab2 = np.asarray(lab1, dtype=np.float64), np.asarray(lab2, dtype=np.float64)
    l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2.0
    g = 0.5 * (1.0 - np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)))
    a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360.0
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360.0
    dl = l2 - l1
    dc = c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180.0, dh - 360.0, np.where(dh < -180.0, dh + 360.0, dh))
    dh = np.where(c1p * c2p == 0.0, 0.0, dh)
    d_h = 2.0 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2.0)
    l_mean = (l1 + l2) / 2.0
    cp_mean = (c1p + c2p) / 2.0
    h_sum = h1p + h2p
    h_mean = np.where(
        np.abs(h1p - h2p) <= 180.0,
        h_sum / 2.0,
        np.where(h_sum < 360.0, (h_sum + 360.0) / 2.0, (h_sum - 360.0) / 2.0),
    )
    h_mean = np.where(c1p * c2p == 0.0, h_sum, h_mean)
    t = (
        1.0
        - 0.17 * np.cos(np.radians(h_mean - 30.0))
        + 0.24 * np.cos(np.radians(2.0 * h_mean))
        + 0.32 * np.cos(np.radians(3.0 * h_mean + 6.0))
        - 0.20 * np.cos(np.radians(4.0 * h_mean - 63.0))
    )
    s_l = 1.0 + 0.015 * (l_mean - 50.0) ** 2 / np.sqrt(20.0 + (l_mean - 50.0) ** 2)
    s_c = 1.0 + 0.045 * cp_mean
    s_h = 1.0 + 0.015 * cp_mean * t
    r_c = 2.0 * np.sqrt(cp_mean**7 / (cp_mean**7 + 25.0**7))
    r_t = -np.sin(np.radians(60.0 * np.exp(-(((h_mean - 275.0) / 25.0) ** 2)))) * r_c
    return np.sqrt(
        (dl / s_l) ** 2 + (dc / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (dc / s_c) * (d_h / s_h)
    )


def generate_palette(count: int = 254) -> tuple[tuple[int, int, int], ...]:
    """The first ``count`` colours of the greedy max-min search described in the module doc.

    Deterministic: distances are rounded to 1e-6 before each choice and ties go to the first
    candidate in grid order, so last-bit differences between machines do not change the result.
    """
    levels = np.unique(np.append(np.arange(0, 256, _LEVELS), 255))
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = srgb_to_lab(grid)
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    keep = (lab[:, 0] >= _LIGHTNESS[0]) & (lab[:, 0] <= _LIGHTNESS[1]) & (chroma >= _MIN_CHROMA)
    grid, lab = grid[keep], lab[keep]
    greys = srgb_to_lab(np.repeat(np.linspace(0.0, 255.0, _GREYS)[:, None], 3, axis=1))
    nearest = np.min(ciede2000(lab[:, None, :], greys[None, :, :]), axis=1)
    chosen: list[tuple[int, int, int]] = []
    for _ in range(count):
        i = int(np.argmax(np.round(nearest, 6)))
        r, g, b = (int(v) for v in grid[i])
        chosen.append((r, g, b))
        nearest = np.minimum(nearest, ciede2000(lab, lab[i]))
    return tuple(chosen)


def _parse(table: str) -> tuple[tuple[int, int, int], ...]:
    colours = []
    for word in table.split():
        r, g, b = (int(word[k : k + 2], 16) for k in (0, 2, 4))
        colours.append((r, g, b))
    return tuple(colours)


#: :func:`generate_palette`'s 254 colours as ``rrggbb``; class id ``n`` gets entry ``n - 1``.
PALETTE: tuple[tuple[int, int, int], ...] = _parse(
    """
    3800ff 00ff00 ff28ff ff0000 ffd800 009000 0080ff c00060 c07800 00ffe0 ff8898 803800
    00a098 b8a8f8 686000 00c8ff 005838 8060a0 a8b870 ffb890 005088 a06860 ffd0f0 007080
    00c078 684050 800880 c8ffc0 b088a8 b00820 b8f8ff 608060 a09000 ffe8b8 ff1058 d8ff00
    9070ff 98c0b0 ff7828 ffa800 b018e0 887050 e05098 ff98f8 b8a078 6090a0 484868 c09890
    88b8ff 8088b0 58c008 b85820 00d0d8 386810 5058d0 806878 485030 604830 00ffa0 e07060
    d8d8ff 305050 ffd8d0 885800 007868 789040 a84090 b868c0 c0c818 10a0e8 d0d8b8 90b8c8
    c08058 503898 703830 e0e890 909880 b0a8c0 607088 009868 1078a8 d0b048 a86078 707058
    78a878 c0e0ff 786058 901838 e8a0c0 88d880 40c8b0 b8ffe8 c84840 007840 d080ff d0b8a8
    ffb0a8 987828 881858 ffc880 b8ff78 709088 e000c0 684070 885838 8090f8 90a810 988078
    d89850 908858 c87880 405060 587068 20b0c8 c02800 d8b8c0 f878c0 687800 f8e8f8 98a8c0
    8000c0 a04850 0068d0 604800 ff9070 d0b0e0 7840ff 48a848 60ffff a888d0 80e8b8 c09010
    005068 d0c088 0040b8 98d800 d01848 288890 405000 7070c0 c050ff 485890 ff5888 90e0ff
    e06030 a07880 605840 686080 508038 c0e0d8 882008 70b0b0 486840 885070 d0a080 ff9018
    6888a8 ffe080 f8f058 ffd8b8 e81870 7848b8 8878a0 486878 a8b898 988870 88d8d0 b0d8b0
    a8a058 c0b8a0 60a890 984838 d088d0 a06830 d86800 a06898 b08850 b0c0f0 605060 988898
    5870f8 005850 00e050 a800a8 606830 9860d0 ff3840 d080a0 60a000 e09088 604848 f8e8d8
    c85868 ff40c8 405848 0098c0 d80088 f09860 f8c038 085818 885860 488878 70a0c0 08e0ff
    786028 807830 b88070 605088 987058 80b860 98d0d8 78c098 b0a090 b0d870 90a8a0 d8f8d8
    985008 787890 ffc8d0 d098a0 5898ff 0040ff 504820 684010 b86850 ff6870 e0b0a0 98a0d0
    ffc0ff f870f0 d8c8e0 d8b070 983858 588800 d0c868 308098 0888d0 78ff80 b048b8 d8a0ff
    884898 b8c8d8 90a068 a090b8 788058 386868 e00018 ffb068 805048 58b8ff b8a0a8 b0a800
    c8e8f0 a80878
    """
)
