"""Record the numbers of every case in :data:`tests.golden.CASES` into ``numbers.json``.

PRIVSHARE_DATA_ROOT=../shared/datasets python -m tests.golden.record [CASE ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from flwr_privshare.launch import run_app
from tests.conftest import DATA_ROOT
from tests.golden import CASES, NUMBERS, numbers_of


def main(names: list[str]) -> None:
    numbers = json.loads(NUMBERS.read_text()) if NUMBERS.is_file() else {}
    for name in names or list(CASES):
        case = CASES[name]
        with tempfile.TemporaryDirectory() as output:
            config = case.run_config(DATA_ROOT, Path(output))
            outcome = run_app(case.app_dir, config, case.federation_config, isolated=True, timeout_s=1800)  # type: ignore[arg-type]
            if not outcome.completed:
                raise SystemExit(f"{name}: {outcome.status}\n{outcome.log[-4000:]}")
            numbers[name] = numbers_of(Path(output) / "run")
        NUMBERS.write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")
        print(f"recorded {name}: {len(numbers[name])} numbers", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
