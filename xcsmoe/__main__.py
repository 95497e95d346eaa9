"""``python -m xcsmoe ...``: the ``xcsmoe`` command line."""

import sys

from xcsmoe.cli import main

if __name__ == "__main__":
    sys.exit(main())
