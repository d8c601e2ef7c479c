"""How long the server takes to judge one submission against its form, as push does.

Every rule is read twice (as JavaRosa and as Enketo read it, docs/validation.md), so this is the
cost of the validator per submission. In-process, no server and no database: run with
`PYTHONPATH=. .venv/bin/python -m bench.bench_validation [--rounds N]`.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from forms import validation
from forms.templates.samples import SAMPLES
from forms.xlsform import import_xlsform

TEMPLATES = Path(__file__).resolve().parent.parent / "forms" / "templates"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2000)
    rounds = parser.parse_args().rounds
    now = datetime(2026, 6, 17, 6, 30, tzinfo=ZoneInfo("Asia/Ho_Chi_Minh"))
    print(f"{'form':<22}{'rules':>7}{'µs/submission':>16}{'submissions/s':>15}")
    for name, data in SAMPLES.items():
        spec = import_xlsform((TEMPLATES / f"{name}.xlsx").read_bytes(), f"{name}.xlsx").spec
        rules = sum(
            bool(f.constraint) + bool(f.relevant) + isinstance(f.required, str)
            for f in validation.walk_fields(spec.fields)
        )
        validation.validate_submission(spec, data, now=now)  # warm the parse cache
        started = time.perf_counter()
        for _ in range(rounds):
            validation.validate_submission(spec, data, now=now)
        each = (time.perf_counter() - started) / rounds
        print(f"{name:<22}{rules:>7}{each * 1e6:>16.0f}{1 / each:>15.0f}")


if __name__ == "__main__":
    main()
