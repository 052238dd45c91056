"""What every command line of the package shares: one-line errors, exit codes, no tracebacks for bad input."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["ArgumentParser", "run", "USER_ERRORS"]

# Errors that mean "bad input": printed as one line. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, FloatingPointError, OSError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one ``error: …`` line (no usage block) with exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Call ``main(argv)``; bad input becomes ``error: …`` and exit status 2, Ctrl-C exit status 130."""
    try:
        main(argv)
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written was left behind", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        sys.exit(2)
