"""``python -m devtools.benchmark`` (``make bench``): see :mod:`devtools.benchmark`."""

from devtools.benchmark.cli import main

if __name__ == "__main__":
    main()
