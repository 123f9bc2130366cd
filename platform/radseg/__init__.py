"""radseg: a plugin-based platform for segmenting medical images with detectron2.

The import is light on purpose: nothing here loads plugins, opens a database or imports torch.
Build everything through :func:`radseg.core.create_platform`.
"""

from __future__ import annotations

from radseg.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl"]
__version__ = "0.1.0"
