"""``python -m minilib COMMAND …``: see :mod:`minilib.cli`."""

from .cli import main

main()
