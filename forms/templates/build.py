"""Builds the programme's XLSForm templates (the .xlsx files beside this script) with openpyxl.

The forms are written here as code so they can be reviewed; run
`python -m forms.templates.build` after editing and commit the regenerated .xlsx files.
Vietnamese labels come first, English second; every form has `ward_code`, the ward the record
belongs to (the server's scope property). Entity lists use the XLSForm `entities` sheet and the
`save_to` column; ODK reserves the property names `name` and `label`, so an entity's display name
is its label expression.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

import openpyxl

VI = "Tiếng Việt (vi)"
EN = "English (en)"
HERE = Path(__file__).resolve().parent
VERSION = "2026010101"

SURVEY_COLUMNS = [
    "type",
    "name",
    f"label::{VI}",
    f"label::{EN}",
    f"hint::{VI}",
    f"hint::{EN}",
    "required",
    f"required_message::{VI}",
    f"required_message::{EN}",
    "relevant",
    "constraint",
    f"constraint_message::{VI}",
    f"constraint_message::{EN}",
    "calculation",
    "default",
    "save_to",
    "sensitive",
    "parameters",
]
CHOICE_COLUMNS = ["list_name", "name", f"label::{VI}", f"label::{EN}"]
ENTITY_COLUMNS = ["list_name", "label", "create_if", "update_if", "entity_id"]
WARD_CODE_RULE = "regex(., '^[0-9]{5}$')"
WARD_CODE_MESSAGE = ("Mã phường/xã gồm 5 chữ số.", "A ward code has 5 digits.")


@dataclass
class Template:
    form_id: str
    title: str
    survey: list[dict[str, str]]
    choices: list[tuple[str, str, str, str]]
    entities: list[dict[str, str]] = field(default_factory=list)


def q(kind: str, name: str, vi: str = "", en: str = "", **columns: str) -> dict[str, str]:
    """One survey row; keyword names are column names with `_vi`/`_en` for the two languages."""
    row = {"type": kind, "name": name, f"label::{VI}": vi, f"label::{EN}": en}
    for key, value in columns.items():
        if key.endswith("_vi"):
            row[f"{key[:-3]}::{VI}"] = value
        elif key.endswith("_en"):
            row[f"{key[:-3]}::{EN}"] = value
        else:
            row[key] = value
    return row


def end(kind: str) -> dict[str, str]:
    return {"type": f"end_{kind}"}


def ward_code(save_to: str = "") -> dict[str, str]:
    return q(
        "text",
        "ward_code",
        "Mã phường/xã",
        "Ward code",
        required="yes",
        constraint=WARD_CODE_RULE,
        constraint_message_vi=WARD_CODE_MESSAGE[0],
        constraint_message_en=WARD_CODE_MESSAGE[1],
        save_to=save_to,
        sensitive="no",
    )


YES_NO = [("yes_no", "yes", "Có", "Yes"), ("yes_no", "no", "Không", "No")]
LEVELS = [
    ("level", "city", "Cấp thành phố", "City level"),
    ("level", "ward", "Cấp phường/xã", "Ward level"),
]
NOT_FUTURE = {
    "constraint": ". <= today()",
    "constraint_message_vi": "Ngày không được ở tương lai.",
    "constraint_message_en": "The date cannot be in the future.",
}


def inspection() -> Template:
    return Template(
        form_id="inspection",
        title="Kiểm tra cơ sở kinh doanh dịch vụ",
        survey=[
            ward_code(save_to="ward_code"),
            q("text", "establishment", "Mã cơ sở (nếu đã có)", "Establishment id (if known)"),
            q(
                "text",
                "est_name",
                "Tên cơ sở",
                "Establishment name",
                required="yes",
                save_to="business_name",
            ),
            q(
                "select_one establishment_kind",
                "kind",
                "Loại hình",
                "Kind",
                required="yes",
                save_to="kind",
            ),
            q(
                "text",
                "kind_other",
                "Loại hình khác",
                "Other kind",
                relevant="${kind} = 'other'",
                required="yes",
            ),
            q("text", "address", "Địa chỉ", "Address", required="yes", save_to="address"),
            q(
                "select_one risk",
                "risk_class",
                "Mức nguy cơ",
                "Risk class",
                required="yes",
                save_to="risk_class",
            ),
            q(
                "select_one yes_no",
                "managed",
                "Thuộc diện quản lý",
                "Under management",
                required="yes",
                save_to="managed",
            ),
            q(
                "date",
                "inspection_date",
                "Ngày kiểm tra",
                "Inspection date",
                required="yes",
                save_to="last_inspection_date",
                **NOT_FUTURE,
            ),
            q("select_one result", "result", "Kết quả", "Result", required="yes", save_to="result"),
            q(
                "select_multiple violation",
                "violations",
                "Hành vi vi phạm",
                "Violations",
                relevant="${result} = 'violation_found'",
                required="yes",
                save_to="violations",
                constraint="count-selected(.) >= 1",
            ),
            q(
                "text",
                "violation_notes",
                "Mô tả vi phạm",
                "Violation notes",
                relevant="${result} = 'violation_found'",
            ),
            q("geopoint", "location", "Vị trí", "Location"),
            q("image", "photo", "Ảnh", "Photo", parameters="max-pixels=1280"),
        ],
        choices=[
            ("establishment_kind", "karaoke", "Karaoke", "Karaoke"),
            ("establishment_kind", "massage", "Xoa bóp (massage)", "Massage"),
            (
                "establishment_kind",
                "hotel_guesthouse",
                "Khách sạn, nhà nghỉ",
                "Hotel or guesthouse",
            ),
            ("establishment_kind", "bar", "Quán bar", "Bar"),
            ("establishment_kind", "other", "Khác", "Other"),
            ("risk", "low", "Thấp", "Low"),
            ("risk", "medium", "Trung bình", "Medium"),
            ("risk", "high", "Cao", "High"),
            *YES_NO,
            ("result", "compliant", "Chấp hành tốt", "Compliant"),
            ("result", "violation_found", "Có vi phạm", "Violation found"),
            ("result", "closed", "Đã ngừng hoạt động", "Closed"),
            ("result", "not_accessible", "Không tiếp cận được", "Not accessible"),
            ("violation", "prostitution", "Hoạt động mại dâm", "Prostitution"),
            ("violation", "no_licence", "Không có giấy phép", "No licence"),
            ("violation", "guest_register", "Không đăng ký lưu trú", "Guest register missing"),
            ("violation", "opening_hours", "Vi phạm giờ hoạt động", "Opening hours"),
            ("violation", "other", "Khác", "Other"),
        ],
        entities=[
            {
                "list_name": "establishments",
                "label": "${est_name}",
                "create_if": "${establishment} = ''",
                "update_if": "${establishment} != ''",
                "entity_id": "coalesce(${establishment}, uuid())",
            }
        ],
    )


def training_session() -> Template:
    return Template(
        form_id="training_session",
        title="Buổi tập huấn",
        survey=[
            ward_code(),
            q(
                "date",
                "session_date",
                "Ngày tập huấn",
                "Session date",
                required="yes",
                **NOT_FUTURE,
            ),
            q("select_one level", "level", "Cấp", "Level", required="yes"),
            q("text", "topic", "Chủ đề", "Topic", required="yes"),
            q("text", "trainer", "Giảng viên", "Trainer", required="yes"),
            q(
                "integer",
                "participants",
                "Số người tham dự",
                "Participants",
                constraint=". >= 0 and . <= 1000",
                constraint_message_vi="Số người từ 0 đến 1000.",
                constraint_message_en="Between 0 and 1000 participants.",
            ),
        ],
        choices=[*LEVELS],
    )


def training_attendance() -> Template:
    return Template(
        form_id="training_attendance",
        title="Điểm danh tập huấn",
        survey=[
            ward_code(save_to="ward_code"),
            q("text", "trainee", "Mã học viên (nếu đã có)", "Trainee id (if known)"),
            q("text", "staff_id", "Mã cán bộ", "Staff id", required="yes", save_to="staff_id"),
            q(
                "text",
                "full_name",
                "Họ và tên",
                "Full name",
                required="yes",
                save_to="full_name",
                sensitive="yes",
            ),
            q("select_one level", "level", "Cấp", "Level", required="yes", save_to="level"),
            q("text", "unit", "Đơn vị", "Unit", required="yes", save_to="unit"),
            q(
                "select_one yes_no",
                "trained",
                "Đã được tập huấn",
                "Trained",
                required="yes",
                save_to="trained",
            ),
            q(
                "date",
                "attendance_date",
                "Ngày",
                "Date",
                required="yes",
                save_to="trained_date",
                **NOT_FUTURE,
            ),
        ],
        choices=[*LEVELS, *YES_NO],
        entities=[
            {
                "list_name": "trainees",
                "label": "concat(${staff_id}, ' ', ${unit})",
                "create_if": "${trainee} = ''",
                "update_if": "${trainee} != ''",
                "entity_id": "coalesce(${trainee}, uuid())",
            }
        ],
    )


def outreach_contact() -> Template:
    services = [
        ("service", "sti_testing", "Xét nghiệm bệnh lây truyền qua đường tình dục", "STI testing"),
        ("service", "counselling", "Tư vấn tâm lý", "Psychological counselling"),
        ("service", "legal_aid", "Trợ giúp pháp lý", "Legal aid"),
        ("service", "vocational_training", "Học nghề", "Vocational training"),
        ("service", "job_referral", "Giới thiệu việc làm", "Job referral"),
        ("service", "loan", "Vay vốn", "Loan"),
        ("service", "health_care", "Chăm sóc sức khỏe", "Health care"),
    ]
    return Template(
        form_id="outreach_contact",
        title="Tiếp cận cộng đồng và dịch vụ hỗ trợ",
        survey=[
            ward_code(save_to="ward_code"),
            q(
                "note",
                "privacy_note",
                "Không ghi họ tên khách hàng, chỉ dùng mã.",
                "Never record the client's name, only the code.",
            ),
            q("text", "case", "Mã hồ sơ (nếu đã có)", "Case id (if known)"),
            q(
                "text",
                "client_code",
                "Mã khách hàng",
                "Client code",
                required="yes",
                save_to="client_code",
                sensitive="yes",
                constraint="regex(., '^[A-Z]{2}[0-9]{4,8}$')",
                constraint_message_vi="Mã gồm 2 chữ in hoa và 4–8 chữ số, không dùng tên.",
                constraint_message_en="Two capital letters and 4–8 digits; never a name.",
                hint_vi="Ví dụ: HN001234",
                hint_en="For example: HN001234",
            ),
            q(
                "date",
                "contact_date",
                "Ngày tiếp cận",
                "Contact date",
                required="yes",
                **NOT_FUTURE,
            ),
            q("select_one place", "contact_place", "Nơi tiếp cận", "Where", required="yes"),
            q(
                "select_one yes_no",
                "consent",
                "Khách hàng đồng ý",
                "Client consents",
                required="yes",
            ),
            q(
                "begin_group",
                "screening",
                "Sàng lọc nhu cầu",
                "Needs screening",
                relevant="${consent} = 'yes'",
            ),
            q(
                "select_multiple service",
                "needs",
                "Nhu cầu",
                "Needs",
                required="yes",
                save_to="needs",
                sensitive="yes",
            ),
            q(
                "select_one yes_no",
                "eligible",
                "Đủ điều kiện hỗ trợ",
                "Qualifies for support",
                required="yes",
                save_to="eligible",
                sensitive="yes",
            ),
            end("group"),
            q(
                "begin_repeat",
                "services",
                "Dịch vụ đã cung cấp",
                "Services given",
                relevant="${consent} = 'yes'",
            ),
            q(
                "select_one service",
                "service_type",
                "Dịch vụ",
                "Service",
                required="yes",
                sensitive="yes",
            ),
            q("date", "service_date", "Ngày", "Date", required="yes", **NOT_FUTURE),
            end("repeat"),
            q(
                "begin_repeat",
                "referrals",
                "Chuyển gửi",
                "Referrals",
                relevant="${consent} = 'yes'",
            ),
            q(
                "select_one referral_target",
                "referred_to",
                "Chuyển đến",
                "Referred to",
                required="yes",
            ),
            q(
                "select_one referral_outcome",
                "referral_outcome",
                "Kết quả chuyển gửi",
                "Outcome",
                required="yes",
                sensitive="yes",
            ),
            end("repeat"),
            q(
                "select_one case_status",
                "case_status",
                "Tình trạng hồ sơ",
                "Case status",
                required="yes",
                save_to="status",
            ),
        ],
        choices=[
            *YES_NO,
            ("place", "street", "Đường phố", "Street"),
            ("place", "venue", "Cơ sở dịch vụ", "Service venue"),
            ("place", "home", "Nơi ở", "Home"),
            ("place", "online", "Trực tuyến", "Online"),
            ("place", "office", "Văn phòng", "Office"),
            *services,
            ("referral_target", "health_facility", "Cơ sở y tế", "Health facility"),
            (
                "referral_target",
                "social_work_centre",
                "Trung tâm công tác xã hội",
                "Social work centre",
            ),
            (
                "referral_target",
                "legal_aid_centre",
                "Trung tâm trợ giúp pháp lý",
                "Legal aid centre",
            ),
            ("referral_target", "job_centre", "Trung tâm dịch vụ việc làm", "Job centre"),
            ("referral_target", "bank", "Ngân hàng chính sách xã hội", "Social policy bank"),
            ("referral_outcome", "pending", "Đang chờ", "Pending"),
            ("referral_outcome", "completed", "Đã nhận dịch vụ", "Service received"),
            ("referral_outcome", "declined", "Từ chối", "Declined"),
            ("referral_outcome", "not_reached", "Không liên lạc được", "Not reached"),
            ("case_status", "open", "Mới mở", "Open"),
            ("case_status", "following", "Đang theo dõi", "Following up"),
            ("case_status", "closed", "Đã đóng", "Closed"),
        ],
        entities=[
            {
                "list_name": "cases",
                "label": "${client_code}",
                "create_if": "${case} = ''",
                "update_if": "${case} != ''",
                "entity_id": "coalesce(${case}, uuid())",
            }
        ],
    )


def communication_event() -> Template:
    return Template(
        form_id="communication_event",
        title="Hoạt động truyền thông",
        survey=[
            ward_code(),
            q("date", "event_date", "Ngày tổ chức", "Event date", required="yes", **NOT_FUTURE),
            q("select_one channel", "channel", "Hình thức", "Channel", required="yes"),
            q("text", "topic", "Chủ đề", "Topic", required="yes"),
            q(
                "select_multiple audience",
                "audience_group",
                "Đối tượng",
                "Audience group",
                required="yes",
            ),
            q(
                "integer",
                "head_count",
                "Số người tham dự",
                "Head count",
                required="yes",
                constraint=". >= 0 and . <= 100000",
                constraint_message_vi="Số người từ 0 đến 100000.",
                constraint_message_en="Between 0 and 100000 people.",
            ),
        ],
        choices=[
            ("channel", "meeting", "Hội nghị, họp dân", "Meeting"),
            ("channel", "loudspeaker", "Loa truyền thanh", "Loudspeaker"),
            ("channel", "leaflet", "Tờ rơi", "Leaflet"),
            ("channel", "social_media", "Mạng xã hội", "Social media"),
            ("channel", "television", "Truyền hình", "Television"),
            ("channel", "banner", "Băng rôn, pa nô", "Banner"),
            ("channel", "other", "Khác", "Other"),
            ("audience", "residents", "Người dân", "Residents"),
            ("audience", "youth", "Thanh thiếu niên", "Young people"),
            ("audience", "business_owners", "Chủ cơ sở kinh doanh", "Business owners"),
            ("audience", "workers", "Người lao động tại cơ sở", "Workers at venues"),
            ("audience", "officials", "Cán bộ", "Officials"),
            ("audience", "students", "Học sinh, sinh viên", "Students"),
        ],
    )


def tip_intake() -> Template:
    after_verified = "${status} = 'verified' or ${status} = 'classified' or ${status} = 'handled'"
    after_classified = "${status} = 'classified' or ${status} = 'handled'"
    return Template(
        form_id="tip_intake",
        title="Tiếp nhận và xử lý tin tố giác, tin báo, khiếu nại",
        survey=[
            ward_code(save_to="ward_code"),
            q("text", "tip", "Mã tin (nếu đã có)", "Tip id (if known)"),
            q(
                "select_one tip_kind",
                "tip_kind",
                "Loại tin",
                "Kind",
                required="yes",
                save_to="kind",
            ),
            q(
                "select_one source",
                "source_channel",
                "Nguồn tin",
                "Source",
                required="yes",
                save_to="source_channel",
            ),
            q(
                "text",
                "summary",
                "Nội dung tóm tắt",
                "Summary",
                required="yes",
                save_to="summary",
                sensitive="yes",
            ),
            q(
                "select_one tip_status",
                "status",
                "Trạng thái",
                "Status",
                required="yes",
                save_to="status",
            ),
            q(
                "datetime",
                "received_at",
                "Thời điểm tiếp nhận",
                "Received at",
                required="yes",
                save_to="received_at",
            ),
            q(
                "datetime",
                "verified_at",
                "Thời điểm xác minh",
                "Verified at",
                required="yes",
                relevant=after_verified,
                save_to="verified_at",
            ),
            q(
                "select_one classification",
                "classification",
                "Phân loại",
                "Classification",
                required="yes",
                relevant=after_classified,
                save_to="classification",
            ),
            q(
                "datetime",
                "classified_at",
                "Thời điểm phân loại",
                "Classified at",
                required="yes",
                relevant=after_classified,
                save_to="classified_at",
            ),
            q(
                "datetime",
                "handled_at",
                "Thời điểm xử lý xong",
                "Handled at",
                required="yes",
                relevant="${status} = 'handled'",
                save_to="handled_at",
            ),
            q(
                "text",
                "handling_result",
                "Kết quả xử lý",
                "Handling result",
                required="yes",
                relevant="${status} = 'handled'",
                save_to="handling_result",
                sensitive="yes",
            ),
        ],
        choices=[
            ("tip_kind", "tip", "Tin tố giác", "Tip"),
            ("tip_kind", "report", "Tin báo", "Report"),
            ("tip_kind", "complaint", "Khiếu nại", "Complaint"),
            ("source", "hotline", "Đường dây nóng", "Hotline"),
            ("source", "in_person", "Trực tiếp", "In person"),
            ("source", "letter", "Đơn thư", "Letter"),
            ("source", "online", "Trực tuyến", "Online"),
            ("source", "transfer", "Cơ quan khác chuyển đến", "Transferred"),
            ("tip_status", "received", "Đã tiếp nhận", "Received"),
            ("tip_status", "verified", "Đã xác minh", "Verified"),
            ("tip_status", "classified", "Đã phân loại", "Classified"),
            ("tip_status", "handled", "Đã xử lý", "Handled"),
            ("classification", "prostitution", "Mua bán dâm", "Prostitution"),
            ("classification", "brokering", "Môi giới, chứa mại dâm", "Brokering or keeping"),
            ("classification", "related_crime", "Tội phạm liên quan", "Related crime"),
            ("classification", "unfounded", "Không có căn cứ", "Unfounded"),
        ],
        entities=[
            {
                "list_name": "tips",
                "label": "concat(${tip_kind}, ' ', ${received_at})",
                "create_if": "${tip} = ''",
                "update_if": "${tip} != ''",
                "entity_id": "coalesce(${tip}, uuid())",
            }
        ],
    )


TEMPLATES = {
    "inspection": inspection,
    "training_session": training_session,
    "training_attendance": training_attendance,
    "outreach_contact": outreach_contact,
    "communication_event": communication_event,
    "tip_intake": tip_intake,
}


def workbook_bytes(template: Template) -> bytes:
    book = openpyxl.Workbook()
    survey = book.active
    assert survey is not None
    survey.title = "survey"
    survey.append(SURVEY_COLUMNS)
    for row in template.survey:
        survey.append([row.get(column, "") or None for column in SURVEY_COLUMNS])
    choices = book.create_sheet("choices")
    choices.append(CHOICE_COLUMNS)
    for choice in template.choices:
        choices.append(list(choice))
    settings = book.create_sheet("settings")
    settings.append(["form_id", "form_title", "version", "default_language"])
    settings.append([template.form_id, template.title, VERSION, VI])
    if template.entities:
        entities = book.create_sheet("entities")
        entities.append(ENTITY_COLUMNS)
        for entity in template.entities:
            entities.append([entity.get(column) or None for column in ENTITY_COLUMNS])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def main() -> None:
    for name, make in TEMPLATES.items():
        path = HERE / f"{name}.xlsx"
        path.write_bytes(workbook_bytes(make()))
        sys.stdout.write(f"wrote {path}\n")


if __name__ == "__main__":
    main()
