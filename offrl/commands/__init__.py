"""One module per ``offrl`` subcommand, below the Click definitions in ``offrl/cli.py``.

Only the command line imports these; ``exits`` turns every failure into a message
and an exit code.
"""
