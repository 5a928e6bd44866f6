"""``python -m sejax`` is the ``sejax`` command."""

import sys

from sejax.cli import main

sys.exit(main())
