"""``python -m dinoseg``."""

import sys

from dinoseg.cli import main

sys.exit(main())
