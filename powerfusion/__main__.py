"""`python -m powerfusion` is the `powerfusion` command."""

import sys

from .cli import main

sys.exit(main())
