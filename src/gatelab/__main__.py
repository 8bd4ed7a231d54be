"""``python -m gatelab``: the command line."""

from gatelab.cli import main

main()
