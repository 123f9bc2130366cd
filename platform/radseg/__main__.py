"""``python -m radseg``: the ``radseg`` command without its console script."""

from radseg.main import main

main()
