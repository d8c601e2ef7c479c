"""How long the server takes to judge one submission against its form, as push does.

Every rule is read twice (as JavaRosa and as Enketo read it, docs/validation.md), so this is the
cost of the validator per submission. In-process, no server and no database: run with
`PYTHONPATH=. .venv/bin/python -m bench.bench_validation [--rounds N]`.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from forms import programme, validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2000)
    rounds = parser.parse_args().rounds
    now = datetime(2026, 6, 17, 6, 30, tzinfo=ZoneInfo("Asia/Ho_Chi_Minh"))
    print(f"{'form':<22}{'rules':>7}{'µs/submission':>16}{'submissions/s':>15}")
    # What the files the forms pick from hold, as push gives it for a submitter of every ward.
    files = {programme.WARDS_FILE: lambda ward: True}
    for name in programme.FORMS:
        spec, data = programme.template(name).spec, programme.sample(name)
        rules = sum(
            bool(f.constraint) + bool(f.relevant) + isinstance(f.required, str)
            for f in validation.walk_fields(spec.fields)
        )
        validation.validate_submission(spec, data, now=now, file_choices=files)  # warm up
        started = time.perf_counter()
        for _ in range(rounds):
            validation.validate_submission(spec, data, now=now, file_choices=files)
        each = (time.perf_counter() - started) / rounds
        print(f"{name:<22}{rules:>7}{each * 1e6:>16.0f}{1 / each:>15.0f}")


if __name__ == "__main__":
    main()
