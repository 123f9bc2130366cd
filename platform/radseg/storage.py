"""Paths that stay inside their folder, and files that appear complete or not at all.

Every path radseg builds under ``RADSEG_HOME`` from a name it did not choose itself (a UID, a
dataset name, an upload's folder, a row's stored path) goes through :func:`inside`, which refuses
a name that is not one plain path component and a result that leaves its folder (symbolic links
resolved). Every delete goes through :func:`remove`, which checks the same before it removes
anything, so a hostile name can neither write nor delete outside the folder it belongs to.

Every file radseg writes under ``RADSEG_HOME`` goes through the atomic helpers: the content is
written to a temporary name in the same directory and renamed into place, so a crash or a
cancelled job never leaves half a file under a real name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from radseg.errors import InputError

#: longest name of one path component on the file systems radseg runs on (bytes)
MAX_NAME_BYTES = 255


class UnsafePathError(InputError):
    """A name that is not one plain path component, or a path that leaves its folder."""


def check_name(name: str) -> str:
    """``name`` if it can be used as one path component, else :class:`UnsafePathError`.

    Refused: anything but a non-empty ``str``, ``.`` and ``..``, separators (``/``, ``\\``),
    NUL and other control characters, and names longer than :data:`MAX_NAME_BYTES` bytes.
    The message shows the name with ``repr`` and cut short: it may come from anywhere.
    """
    if not isinstance(name, str):
        raise UnsafePathError(f"a path component must be text, not {type(name).__name__}")
    problem = None
    if name in ("", ".", ".."):
        problem = "is empty, '.' or '..'"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "contains a control character"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        problem = f"is longer than {MAX_NAME_BYTES} bytes"
    if problem:
        raise UnsafePathError(
            f"refused to build a path from {name[:80]!r}: it {problem}; a name used as a file "
            "or folder name must be one plain path component"
        )
    return name


def inside(root: Path, *parts: str) -> Path:
    """``root / part / ...`` after checking that every part is one plain path component
    (:func:`check_name`) and that the result, with symbolic links resolved, stays inside
    ``root``.

    :raises UnsafePathError: a part is not a plain name, or the path leads out of ``root``
        (through a symbolic link under it).
    """
    root = Path(root)
    path = root.joinpath(*(check_name(part) for part in parts))
    if parts:
        _check_within(path, root, follow=True)
    return path


def inside_stored(root: Path, stored: str) -> Path:
    """A relative path as stored in the database (``a/b/c``, ``/``-separated) under ``root``,
    checked part by part like :func:`inside`."""
    if not isinstance(stored, str) or not stored or stored.startswith("/"):
        raise UnsafePathError(f"refused stored path {str(stored)[:80]!r}: it must be relative")
    return inside(root, *PurePosixPath(stored).parts)


def _check_within(path: Path, root: Path, *, follow: bool = False) -> None:
    """Raise unless ``path`` is strictly inside ``root``, symbolic links resolved.

    With ``follow`` a link at ``path`` itself counts where it points (what a write opens);
    without, it counts where it is (what a delete removes: the link, not its target).
    """
    real_root = root.resolve()
    if follow or path.name in ("", ".."):  # "a/.." names a's parent, not a thing in a
        real = path.resolve()
    else:
        real = path.parent.resolve() / path.name
    if real == real_root or real_root not in real.parents:
        raise UnsafePathError(
            f"refused {path}: it resolves to {real}, which is not inside {real_root}"
        )


def remove(path: Path, *, within: Path, empty_only: bool = False) -> bool:
    """Delete the file, link or folder tree ``path``, which must lie strictly inside ``within``.

    :param within: the folder ``path`` belongs to (e.g. ``RADSEG_HOME/uploads``); checked with
        symbolic links resolved, so neither ``..`` nor a link can make this delete elsewhere.
    :param empty_only: remove a folder only if it is empty (a parent this process created,
        which another process may have filled since).
    :returns: whether something was removed.
    :raises UnsafePathError: ``path`` is ``within`` itself or outside it.
    """
    path = Path(path)
    _check_within(path, Path(within))
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
        return True
    if not path.is_dir():
        return False
    if empty_only:
        try:
            path.rmdir()
        except OSError:  # not empty (or gone): what is in it is not ours to remove
            return False
        return True
    shutil.rmtree(path)
    return True


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it to ``target`` if the block succeeds.

    The temporary name keeps ``target``'s suffixes so that writers which pick a format from the
    file name (SimpleITK, Pillow) still see the right one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix="".join(target.suffixes) or ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        remove(tmp, within=target.parent)
        raise


def atomic_write_bytes(target: Path, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: Path, text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(target: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes ``target`` when the block succeeds.

    ``target`` must not exist yet (dataset versions and model outputs are immutable) unless
    ``replace`` is true: then an existing ``target`` is swapped out whole once the new one is
    complete and removed after, never emptied first. On error the temporary directory is
    removed with everything in it.
    """
    target = Path(target)
    if target.exists() and not replace:
        raise FileExistsError(f"{target} already exists; versions are immutable, pick a new one")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        old = None
        if replace and target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
            os.rename(target, old)
        os.replace(tmp, target)
        if old is not None:
            remove(old, within=target.parent)
    except BaseException:
        remove(tmp, within=target.parent)
        raise
