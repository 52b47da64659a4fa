"""``python -m star_cli ...`` is ``star ...``."""

import sys

from star_cli.cli import main

sys.exit(main())
