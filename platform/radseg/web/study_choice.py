"""The studies a Research page form chose (its build and predict buttons): the ticked ones, or
every study the form's search and filters match, read the way the studies list reads them.

Shared by the datasets and training areas, whose buttons post the same form.
"""

from __future__ import annotations

from radseg.errors import InputError
from radseg.web.context import db
from radseg.web.schemas import StudyChoice
from radseg.web.validation import form_fields, form_ids
from radseg.workflows.studies import matching_study_ids

#: studies ticked by hand that the chooser carries from page to page (in its URL); more are
#: chosen by a search ("all studies matching the search")
MAX_TICKED = 200


def chosen_study_ids() -> list[int]:
    """The studies a build or predict form chose: the ticked ones, or every study matching the
    form's search and filters (validated as the studies list validates them).

    :raises InputError: a bad field, or a search matching none or too many studies.
    """
    choice = form_fields(StudyChoice)
    if choice.studies == "matching":
        return matching_study_ids(db(), choice.filters())
    ticked = list(dict.fromkeys(form_ids("study")))
    if len(ticked) > MAX_TICKED:
        raise InputError(
            f"{len(ticked)} studies are ticked; at most {MAX_TICKED}: choose all studies "
            "matching a search instead"
        )
    return ticked
