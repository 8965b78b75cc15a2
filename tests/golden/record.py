"""Record the numbers of cases of :data:`tests.golden.CASES` (all by default).

PRIVSHARE_DATA_ROOT=../shared/datasets python -m tests.golden.record [CASE ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from flwr_privshare.launch import run_app
from tests.conftest import DATA_ROOT
from tests.golden import CASES, NUMBERS, cpu_key, numbers_of, recordings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    args = parser.parse_args()
    target = NUMBERS
    everything = recordings()
    numbers = everything.setdefault(cpu_key(), {})
    for name in args.cases or list(CASES):
        case = CASES[name]
        with tempfile.TemporaryDirectory() as output:
            config = case.run_config(DATA_ROOT, Path(output))
            outcome = run_app(case.app_dir, config, case.federation_config, isolated=True, timeout_s=1800)  # type: ignore[arg-type]
            if not outcome.completed:
                raise SystemExit(f"{name}: {outcome.status}\n{outcome.log[-4000:]}")
            numbers[name] = numbers_of(Path(output) / "run")
        target.write_text(json.dumps(everything, indent=1, sort_keys=True) + "\n")
        print(f"recorded {name} on {cpu_key()}: {len(numbers[name])} numbers", flush=True)


if __name__ == "__main__":
    main()
