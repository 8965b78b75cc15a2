"""``privshare-sweep SPEC.toml [--methods a,b] [--clients 10,100] [--report-only] [--quiet]``: run a sweep, write its
tables and plots.

The tables cover every cell of the spec: ``--methods`` and ``--clients`` only choose what runs now, and
``--report-only`` runs nothing and rewrites the tables from the finished run folders (and, for
folders since deleted, the rows the earlier report recorded). Exits 0 when
every cell that was to run finished (now or before), 1 when some cell failed (the others still ran;
``sweep.md`` lists the failed ones with their logs), 2 when the spec is refused before anything ran, 130 when
interrupted (Ctrl-C or SIGTERM: the running cell's run and the sweep's SuperLink are stopped).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    from ..launch import stop_on_sigterm
    from . import SpecError, load_spec, run_sweep, write_report

    parser = argparse.ArgumentParser(prog="privshare-sweep", description=__doc__)
    parser.add_argument("spec", help="the sweep spec (TOML)")
    parser.add_argument("--methods", default="", help="comma-separated methods of the spec to run (default: all)")
    parser.add_argument("--clients", default="", help="comma-separated client counts of the spec to run (default: all)")
    parser.add_argument("--report-only", action="store_true", help="run nothing; rewrite the tables and plots")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        clients = [int(count) for count in args.clients.split(",") if count]
    except ValueError:
        parser.error(f"--clients: {args.clients!r} is not a comma-separated list of client counts, e.g. 10,100")
    try:
        spec = load_spec(args.spec, [name for name in args.methods.split(",") if name] or None, clients or None)
    except SpecError as error:
        print(f"privshare-sweep: {error}", file=sys.stderr)
        sys.exit(2)
    stop_on_sigterm()
    try:
        outcomes = [] if args.report_only else run_sweep(spec, progress=not args.quiet)
    except KeyboardInterrupt as interruption:
        print(
            f"privshare-sweep: interrupted ({interruption or 'Ctrl-C'}); the running cell was stopped, the finished "
            "ones are kept: the same command runs the rest",
            file=sys.stderr,
        )
        sys.exit(130)
    print(write_report(spec, outcomes).read_text())
    sys.exit(0 if all(outcome.passed for outcome in outcomes) else 1)


if __name__ == "__main__":
    main()
