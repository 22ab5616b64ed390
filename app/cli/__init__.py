"""The ``parafeed`` command line: the same engine as the server, the same JSON (docs/ARCHITECTURE.md, "CLI").

Every command that reports results takes ``--json`` and then prints exactly one JSON document on stdout (the HTTP
body, for sample/gradient/infer; progress bars go to stderr). Errors print one line on stderr and exit with 2.
Commands: ``app.cli.service`` (serve, worker, models, bench), ``app.cli.compute`` (sample, gradient, infer),
``app.cli.training`` (train, eval, publish, images); flags in ``app.cli.parser``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from app.cli.parser import build_parser

    args = build_parser().parse_args(argv)
    from models.data import DataNotFoundError
    from models.registry import ChecksumError, UnknownModelError

    try:
        return int(args.handler(args))
    except (DataNotFoundError, UnknownModelError, ChecksumError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"parafeed {args.command}: {message}", file=sys.stderr)
        return 2
