"""The ``parafeed`` command line: the same engine as the server, the same JSON (DESIGN.md section 5).

Subcommands land with the capabilities behind them; ``parafeed --help`` lists what this version has.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def _bench(args: argparse.Namespace) -> int:
    if not (CHECKOUT / "benchmarks" / "__init__.py").exists():
        print("parafeed bench runs from a source checkout (the benchmarks/ folder is not installed)", file=sys.stderr)
        return 2
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    from benchmarks import synthetic

    argv = ["--out", str(args.out)] + (["--quick"] if args.quick else [])
    synthetic.main(argv)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parafeed", description="Exact parallel evaluation of sequential nets.")
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="run the benchmarks; JSON + PNG land in --out")
    bench.add_argument("--quick", action="store_true", help="small sizes, one repeat (about a minute)")
    bench.add_argument("--out", type=Path, default=CHECKOUT / "benchmarks" / "results")
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
