"""``python -m megaspec``: the ``megaspec`` command."""

import sys

from megaspec.cli import main

sys.exit(main())
