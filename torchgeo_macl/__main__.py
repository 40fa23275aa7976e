"""Run the command line with ``python -m torchgeo_macl``."""

import sys

from torchgeo_macl.main import main

sys.exit(main())
