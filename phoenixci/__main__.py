"""``python -m phoenixci`` is the ``phoenixci`` command."""
import sys

from phoenixci.cli import main

sys.exit(main())
