"""One valid submission per programme form: what tests, benchmarks and the simulator send.

One copy, so a change to a form changes its sample once (the template tests check each sample
against its form).
"""

from __future__ import annotations

import copy
from typing import Any

SAMPLES: dict[str, dict[str, Any]] = {
    "inspection": {
        "ward_code": "00004",
        "est_name": "Karaoke Hoa Mai",
        "kind": "karaoke",
        "address": "12 Phố Huế",
        "risk_class": "high",
        "managed": "yes",
        "inspection_date": "2026-02-20",
        "result": "violation_found",
        "violations": ["no_licence", "opening_hours"],
        "location": "21.01 105.85",
    },
    "training_session": {
        "ward_code": "00004",
        "session_date": "2026-02-10",
        "level": "ward",
        "topic": "Luật",
        "trainer": "Nguyễn Văn A",
        "participants": 30,
    },
    "training_attendance": {
        "ward_code": "00004",
        "staff_id": "CB0012",
        "full_name": "Trần Thị B",
        "level": "city",
        "unit": "Sở Y tế",
        "trained": "yes",
        "attendance_date": "2026-02-10",
    },
    "outreach_contact": {
        "ward_code": "00004",
        "client_code": "HN001234",
        "contact_date": "2026-02-11",
        "contact_place": "venue",
        "consent": "yes",
        "screening": {"needs": "sti_testing legal_aid", "eligible": "yes"},
        "services": [{"service_type": "sti_testing", "service_date": "2026-02-11"}],
        "referrals": [{"referred_to": "legal_aid_centre", "referral_outcome": "pending"}],
        "case_status": "open",
    },
    "communication_event": {
        "ward_code": "00004",
        "event_date": "2026-02-01",
        "channel": "meeting",
        "topic": "Phòng chống",
        "audience_group": ["residents", "youth"],
        "head_count": 120,
    },
    "tip_intake": {
        "ward_code": "00004",
        "tip_kind": "report",
        "source_channel": "hotline",
        "summary": "…",
        "status": "verified",
        "received_at": "2026-02-01T08:00:00+07:00",
        "verified_at": "2026-02-02T10:00:00+07:00",
    },
}


def sample(form_id: str, **answers: Any) -> dict[str, Any]:
    """A fresh copy of the form's sample with `answers` replacing its own."""
    return {**copy.deepcopy(SAMPLES[form_id]), **answers}


def inspection_answers(**answers: Any) -> dict[str, Any]:
    """The inspection sample without its ward (each op sets its own) and location."""
    data = sample("inspection", **answers)
    for field in ("ward_code", "location"):
        if field not in answers:
            data.pop(field)
    return data
