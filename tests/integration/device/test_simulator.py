"""A small simulator run against the app on both databases: converged, nothing doubled or lost."""

from __future__ import annotations

import httpx
import pytest

from device.simulator import main, simulate
from tests.conftest import Backend
from tests.helpers import ADMIN_PASSWORD, ADMIN_USERNAME

pytestmark = pytest.mark.db


async def test_small_simulation_converges(db: Backend) -> None:
    report = await simulate(
        "http://fieldsync.test",
        devices=4,
        days=1,
        edits_per_day=10,
        overlap=0.5,
        seed=3,
        admin_username=ADMIN_USERNAME,
        admin_password=ADMIN_PASSWORD,
        loss=0.2,
        offline=0.5,
        transport=httpx.ASGITransport(app=db.app),
    )
    assert report.ok, report.format()
    assert report.diverged_devices == 0 and report.duplicates == 0 and report.lost_values == 0
    assert report.edits == 4 * 10 + 3  # 3 shared records for the one ward
    assert report.ops >= report.edits and report.checked_values > report.edits
    assert report.lost_requests + report.lost_responses > 0, "the run did inject faults"
    assert report.conflicts > 0, "overlapping offline edits made conflicts"


def test_main_needs_an_admin_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIELDSYNC_ADMIN_PASSWORD", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["--server", "http://127.0.0.1:9"])
    assert exit_info.value.code == 2
