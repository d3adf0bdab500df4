"""``python -m promptdsl``: the same as the ``promptdsl`` command (for the interpreter of a venv whose
``promptdsl`` script is not on the PATH, say, where a plugin was just installed)."""

import sys

from .cli import main

sys.exit(main())
