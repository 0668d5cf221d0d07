"""The device commands' argument parser: exact flag names only, one-line errors, exit 2.

argparse would otherwise accept any unambiguous prefix (``--allowed-s F`` for ``--allowed-signers F``) and
print a usage block. Standard library only, Python 3.8 compatible.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import EXIT_BAD_INPUT


class Parser(argparse.ArgumentParser):
    """argparse without prefix matching (subcommands inherit it) whose errors are one line."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message):  # type: ignore[override]
        print("error: {}: {} (flags must be spelled out in full; see --help)".format(self.prog, message),
              file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
