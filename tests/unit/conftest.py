"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from radseg.core import Platform, create_platform
from radseg.settings import load_settings


@pytest.fixture
def make_platform(tmp_path: Path) -> Iterator[Callable[..., Platform]]:
    made: list[Platform] = []

    def make(*plugins: tuple[str, Any], autoload: bool = False, **settings: Any) -> Platform:
        platform = create_platform(
            load_settings({"home": tmp_path, **settings}, environ={}),
            autoload=autoload,
            plugins=plugins,
        )
        made.append(platform)
        return platform

    yield make
    for platform in made:
        platform.close()
