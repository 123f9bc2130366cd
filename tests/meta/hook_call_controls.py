"""Controls for the meta-test that every hook is called by a test (not collected on its own).

Each names a hook without running it through pluggy: the meta-test must not count them.
"""

from __future__ import annotations

from radseg_plugins.datasets import dicom_folder


def test_names_a_hook_only_in_a_comment() -> None:
    # radseg_job_finished is not called here
    assert True


def test_calls_an_implementation_directly() -> None:
    assert list(dicom_folder.radseg_register_datasets())
