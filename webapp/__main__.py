"""``python -m webapp``: serve the demo app alone (see :mod:`webapp.serve`)."""

import sys

from webapp.serve import main

if __name__ == "__main__":
    sys.exit(main())
