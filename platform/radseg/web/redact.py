"""Server paths out of what the web app shows (job payloads, results, messages and logs).

A path under ``RADSEG_HOME`` becomes relative to it (``uploads/u-1/study.zip``): that is how the
database stores paths, and it tells a researcher which of their files is meant. Any other
absolute path keeps only its last part (``…/train_net.py``): it names the file in a traceback
without showing how the server is laid out.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

#: characters that end a path in free text (quotes, brackets, separators, a line's ``:12``)
_END = r"\s\"'`<>|:;,()\[\]{}"
#: not preceded by a path character, so ``a/b`` and the ``//host/x`` of a URL are left alone
_START = r"(?<![\w.~/\\-])"
_ABSOLUTE = re.compile(rf"{_START}/(?:[^{_END}/]+/)+[^{_END}/]*")
HIDDEN = "…"


class PathRedactor:
    """Rewrites the server paths in strings, and in the strings of JSON-like values."""

    def __init__(self, home: Path) -> None:
        names = {str(home.absolute()), str(home.resolve())} - {"/"}
        alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        self._home = re.compile(rf"{_START}(?:{alternatives})(?:/|(?=[{_END}]|$))")

    def text(self, value: str) -> str:
        # inside the home: relative to it (the home itself is ".")
        value = self._home.sub(lambda m: "" if m.group().endswith("/") else ".", value)
        return _ABSOLUTE.sub(self._hide, value)

    @staticmethod
    def _hide(match: re.Match[str]) -> str:
        return f"{HIDDEN}/{PurePosixPath(match.group()).name}"

    def value(self, value: Any) -> Any:
        """``value`` with every string in it (dict keys too) passed through :meth:`text`."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value
