"""``python -m fathom`` (what ``torchrun -m fathom`` and ``accelerate launch -m fathom`` run)."""

import sys

from fathom.cli import main

sys.exit(main())
