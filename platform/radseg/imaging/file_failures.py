"""Which exceptions a damaged input file may raise, so that readers report it and go on.

Readers isolate each file: whatever parsing, reading a header element, de-identifying,
decoding or re-encoding one file raises is reported for that file, and the rest of the input is
kept. ``except Exception`` is not enough for that: a Rust decoder (pylibjpeg-rle, through pyo3)
turns a panic into ``pyo3_runtime.PanicException``, which derives from :class:`BaseException`
(so that ordinary handlers do not swallow it) and whose class cannot be imported. It is matched
by name; KeyboardInterrupt, SystemExit and GeneratorExit still propagate.
"""

from __future__ import annotations

__all__ = ["is_file_failure"]


def is_file_failure(exc: BaseException) -> bool:
    """Whether ``exc``, raised while handling one input file, means only that file is unusable."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"
