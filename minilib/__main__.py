"""``python -m minilib COMMAND …``: see :mod:`minilib.cli`."""

from minilib.cli import main

main()
