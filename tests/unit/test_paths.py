"""The one "stays inside" helper: names that are one plain component, writes and deletes that
never leave their folder (``..``, separators, symbolic links), and dataset names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from radseg.errors import InputError
from radseg.settings import load_settings
from radseg.storage import (
    UnsafePathError,
    atomic_directory,
    check_name,
    inside,
    inside_stored,
    remove,
)
from radseg.workflows.datasets import check_dataset_name

HOSTILE_NAMES = [
    "",
    ".",
    "..",
    "1.2.840.10008.9/../../../victim",
    "1.2.840.10008.7/../../../outside",
    "/etc",
    "a\\..\\b",
    "nul\x00byte",
    "new\nline",
    "x" * 256,
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_name_that_is_not_one_plain_component_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError, match="refused to build a path from"):
        check_name(name)
    with pytest.raises(UnsafePathError):
        inside(tmp_path, "studies", name)
    # it is an input error: the CLI prints one line, the web answers 400
    assert issubclass(UnsafePathError, InputError)


def test_plain_names_make_paths_under_the_root(tmp_path: Path) -> None:
    assert check_name("2.25.123") == "2.25.123"
    assert inside(tmp_path, "studies", "2.25.1", "2.25.2") == tmp_path / "studies/2.25.1/2.25.2"
    assert inside(tmp_path, "labels", "1.2.3", "v1.nii.gz").name == "v1.nii.gz"
    assert inside(tmp_path, "datasets", "liver ct", "v2") == tmp_path / "datasets/liver ct/v2"
    assert inside(tmp_path) == tmp_path


def test_a_link_under_the_root_cannot_lead_a_write_or_a_delete_out(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    (root / "studies").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    (root / "studies" / "2.25.1").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="not inside"):
        inside(root, "studies", "2.25.1", "00000.dcm")
    with pytest.raises(UnsafePathError, match="not inside"):
        inside(root, "studies", "2.25.1")
    # a delete of the link removes the link, never what it points to
    assert remove(root / "studies" / "2.25.1", within=root / "studies")
    assert (elsewhere / "precious.txt").read_text() == "keep"
    assert not (root / "studies" / "2.25.1").exists()


def test_remove_stays_strictly_inside_its_folder(tmp_path: Path) -> None:
    uploads = tmp_path / "home" / "uploads"
    (uploads / "abc" / "zip-0").mkdir(parents=True)
    (uploads / "abc" / "zip-0" / "1.dcm").write_bytes(b"x")
    (tmp_path / "home" / "radseg.db").write_bytes(b"db")
    for escape in (uploads, uploads / "..", uploads / "abc" / ".." / "..", tmp_path / "home"):
        with pytest.raises(UnsafePathError):
            remove(escape, within=uploads)
    assert (tmp_path / "home" / "radseg.db").exists()
    # a parent folder noted as "ours" goes only while empty
    assert not remove(uploads / "abc", within=uploads, empty_only=True)
    assert remove(uploads / "abc", within=uploads)
    assert not (uploads / "abc").exists()
    assert not remove(uploads / "abc", within=uploads)  # already gone: nothing to do
    (uploads / "empty").mkdir()
    assert remove(uploads / "empty", within=uploads, empty_only=True)


def test_stored_paths_and_settings_paths_are_checked(tmp_path: Path) -> None:
    settings = load_settings({"home": tmp_path / "home"}, environ={})
    assert settings.path("logs", "job-1.log") == tmp_path / "home" / "logs" / "job-1.log"
    with pytest.raises(UnsafePathError):
        settings.path("studies", "1.2.840.10008.7/../../../outside")
    assert inside_stored(tmp_path, "volumes/2.25.1.nii") == tmp_path / "volumes" / "2.25.1.nii"
    for stored in ("../radseg.db", "/etc/passwd", "volumes/../../x", ""):
        with pytest.raises(UnsafePathError):
            inside_stored(tmp_path, stored)


def test_a_replaced_directory_is_swapped_whole_and_a_failed_one_leaves_the_old(
    tmp_path: Path,
) -> None:
    target = tmp_path / "series"
    target.mkdir()
    (target / "old.dcm").write_bytes(b"old")
    with pytest.raises(FileExistsError), atomic_directory(target):
        pass
    with pytest.raises(RuntimeError), atomic_directory(target, replace=True) as tmp:
        (tmp / "new.dcm").write_bytes(b"new")
        raise RuntimeError("disk full")
    assert sorted(p.name for p in target.iterdir()) == ["old.dcm"]
    with atomic_directory(target, replace=True) as tmp:
        (tmp / "new.dcm").write_bytes(b"new")
    assert sorted(p.name for p in target.iterdir()) == ["new.dcm"]
    assert os.listdir(tmp_path) == ["series"]  # no temporary or swapped-out folder is left


@pytest.mark.parametrize("name", ["liver", "liver-ct v2", "A.b_c", "x" * 80])
def test_valid_dataset_names(name: str) -> None:
    assert check_dataset_name(name) == name


@pytest.mark.parametrize("name", ["", "..", ".hidden", "a/b", " lead", "x" * 81, "tab\tname"])
def test_invalid_dataset_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(InputError, match="not a valid dataset name: use 1 to 80 letters"):
        check_dataset_name(name)
