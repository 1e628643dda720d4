"""``python -m overlock_hf.cli``: the same as the ``overlock-hf`` command."""

import sys

from . import main

sys.exit(main())
