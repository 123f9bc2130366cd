"""``python -m radseg.cli``: the ``radseg`` command without its console script."""

from radseg.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
