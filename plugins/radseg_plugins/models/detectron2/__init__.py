"""The detectron2 model plugin: semantic FPN, DeepLabV3+ and Mask R-CNN on detectron2 v0.6.

Registered through the ``radseg`` entry point ``detectron2``. Importing the plugin imports
neither torch nor detectron2 (listing plugins stays fast and works where they are not
installed); :class:`~.backend.Detectron2Backend` imports them when it trains or predicts.
Install detectron2 with ``.venv/bin/python tools/install_detectron2.py``.
"""

from __future__ import annotations

from typing import Any

from radseg.contracts import validate_settings
from radseg.hookspecs import hookimpl

from .backend import Detectron2Backend
from .settings import Detectron2Settings

__all__ = ["Detectron2Backend", "Detectron2Settings", "radseg_configure", "radseg_register_models"]

PLUGIN_NAME = "detectron2"


@hookimpl
def radseg_configure(platform: Any) -> Detectron2Settings:
    return validate_settings(
        PLUGIN_NAME, Detectron2Settings, platform.settings.plugin_settings(PLUGIN_NAME)
    )


@hookimpl
def radseg_register_models() -> list[type[Detectron2Backend]]:
    return [Detectron2Backend]
