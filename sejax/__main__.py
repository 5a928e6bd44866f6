"""``python -m sejax`` is the ``sejax`` command."""

import sys

from sejax.cli.main import main

sys.exit(main())
