"""An env module that calls sys.exit(3) when imported (``--env tests.env_exits_on_import:Env``)."""

import sys

sys.exit(3)
