"""``python -m jaxcurv …`` is the ``jaxcurv`` command."""

import sys

from jaxcurv.cli import main

sys.exit(main())
