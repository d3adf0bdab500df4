"""``python -m promptdsl.cli``: the same as the ``promptdsl`` command."""

import sys

from . import main

sys.exit(main())
