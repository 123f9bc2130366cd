"""``python -m radseg``: the ``radseg`` command without its console script."""

from radseg.main import main

if __name__ == "__main__":  # importing this module (pkgutil.walk_packages does) runs nothing
    main()
