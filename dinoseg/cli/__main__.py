"""``python -m dinoseg.cli``."""

import sys

from dinoseg.cli import main

sys.exit(main())
