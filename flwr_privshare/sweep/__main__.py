"""``privshare-sweep SPEC.toml [--methods a,b] [--quiet]``: run a sweep, write its tables and plots.

Exits 0 when every cell finished (ran now or before), 1 when some cell failed (the others still
ran; ``sweep.md`` lists the failed ones with their logs), 2 when the spec is refused before anything ran.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    from . import SpecError, load_spec, run_sweep, write_report

    parser = argparse.ArgumentParser(prog="privshare-sweep", description=__doc__)
    parser.add_argument("spec", help="the sweep spec (TOML)")
    parser.add_argument("--methods", default="", help="comma-separated methods of the spec to run (default: all)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec, [name for name in args.methods.split(",") if name] or None)
    except SpecError as error:
        print(f"privshare-sweep: {error}", file=sys.stderr)
        sys.exit(2)
    outcomes = run_sweep(spec, progress=not args.quiet)
    print(write_report(spec, outcomes).read_text())
    sys.exit(0 if all(outcome.passed for outcome in outcomes) else 1)


if __name__ == "__main__":
    main()
