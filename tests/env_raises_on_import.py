"""An env module whose import fails (``--env tests.env_raises_on_import:Env``)."""

raise RuntimeError("this module cannot be imported")
