"""Every problem code in one registry, and the base error of the pure packages.

A code is a stable machine string: devices program against it, so a member's value never
changes. Add a code here (and to docs/protocol.md, "Problem codes", if a device can receive it)
before raising it anywhere.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorCode(StrEnum):
    # What the server answers for a bare HTTP status.
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_ACCEPTABLE = "not_acceptable"
    CONFLICT = "conflict"
    GONE = "gone"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNPROCESSABLE = "unprocessable"
    TOO_MANY_REQUESTS = "too_many_requests"
    INTERNAL_ERROR = "internal_error"
    UNAVAILABLE = "unavailable"
    HTTP_ERROR = "http_error"
    DATABASE_UNAVAILABLE = "database_unavailable"
    # Bodies and parameters.
    MALFORMED_BODY = "malformed_body"
    VALIDATION_FAILED = "validation_failed"
    INVALID = "invalid"
    REQUIRED = "required"
    CONTROL_CHARACTER = "control_character"
    # Identity and sessions.
    TOKEN_MISSING = "token_missing"  # noqa: S105 (a code, not a secret)
    TOKEN_INVALID = "token_invalid"  # noqa: S105 (a code, not a secret)
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 (a code, not a secret)
    TOKEN_REVOKED = "token_revoked"  # noqa: S105 (a code, not a secret)
    ROLE_FORBIDDEN = "role_forbidden"
    INVALID_CREDENTIALS = "invalid_credentials"
    LOGIN_THROTTLED = "login_throttled"
    USER_DISABLED = "user_disabled"
    DEVICE_REVOKED = "device_revoked"
    REFRESH_INVALID = "refresh_invalid"
    REFRESH_REVOKED = "refresh_revoked"
    REFRESH_EXPIRED = "refresh_expired"
    REFRESH_REUSED = "refresh_reused"
    # Administration.
    USERNAME_TAKEN = "username_taken"
    USER_NOT_FOUND = "user_not_found"
    DEVICE_NOT_FOUND = "device_not_found"
    CANNOT_DISABLE_SELF = "cannot_disable_self"
    LAST_ADMIN = "last_admin"
    UNKNOWN_WARD = "unknown_ward"
    COLLECT_TOKEN_NOT_FOUND = "collect_token_not_found"  # noqa: S105 (a code, not a secret)
    # Forms.
    XLSFORM_INVALID = "xlsform_invalid"
    XLSFORM_TOO_LARGE = "xlsform_too_large"
    XFORM_INVALID = "xform_invalid"  # ODK Validate: ODK Collect could not load the form
    NO_DRAFT = "no_draft"
    VERSION_REQUIRED = "version_required"
    VERSION_EXISTS = "version_exists"
    INCOMPATIBLE_CHANGE = "incompatible_change"
    TYPE_CHANGED = "type_changed"
    FORM_UNKNOWN = "form_unknown"
    FORM_VERSION_UNKNOWN = "form_version_unknown"
    FORM_FORBIDDEN = "form_forbidden"
    FORM_CLOSED = "form_closed"
    SUBMISSION_NOT_FOUND = "submission_not_found"
    FORM_ATTACHMENT_NOT_FOUND = "form_attachment_not_found"
    FORM_ATTACHMENT_UNDECLARED = "form_attachment_undeclared"
    FORM_ATTACHMENT_GENERATED = "form_attachment_generated"
    # ODK Collect (OpenRosa).
    COLLECT_TOKEN_INVALID = "collect_token_invalid"  # noqa: S105 (a code, not a secret)
    # OpenRosa submissions (POST /submission): the multipart body and its instance XML.
    SUBMISSION_XML_MISSING = "submission_xml_missing"
    SUBMISSION_XML_INVALID = "submission_xml_invalid"
    # Submission validation (items at the answer's path).
    CONSTRAINT = "constraint"
    UNKNOWN_FIELD = "unknown_field"
    UNKNOWN_CHOICE = "unknown_choice"
    WRONG_TYPE = "wrong_type"
    # Push and pull.
    DEVICE_MISMATCH = "device_mismatch"
    HLC_INVALID = "hlc_invalid"
    CLOCK_SKEW = "clock_skew"
    OPS_NOT_CONTIGUOUS = "ops_not_contiguous"
    CONCURRENT_WRITE = "concurrent_write"
    OP_INVALID = "op_invalid"
    INSTANCE_ID_REUSED = "instance_id_reused"
    WARD_FORBIDDEN = "ward_forbidden"
    LIST_FORBIDDEN = "list_forbidden"
    CURSOR_INVALID = "cursor_invalid"
    CURSOR_DEVICE_MISMATCH = "cursor_device_mismatch"
    # Entity changes (items of a rejected entity).
    ENTITY_LIST_MISMATCH = "entity_list_mismatch"
    LIST_MISMATCH = "list_mismatch"
    ENTITY_NOT_FOUND = "entity_not_found"
    BASE_VERSION_AHEAD = "base_version_ahead"
    SCOPE_MISSING = "scope_missing"
    BASE_PROPERTY_MISSING = "base_property_missing"
    PROPERTY_UNKNOWN = "property_unknown"
    PROPERTY_TYPE = "property_type"
    RANK_VALUE_UNKNOWN = "rank_value_unknown"
    # Conflicts.
    CONFLICT_NOT_FOUND = "conflict_not_found"
    STALE = "stale"
    RESOLUTION_INVALID = "resolution_invalid"
    # Blobs and resumable uploads.
    BLOB_NOT_FOUND = "blob_not_found"
    BLOB_HASH_MISMATCH = "blob_hash_mismatch"
    BLOB_STORE_UNAVAILABLE = "blob_store_unavailable"
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"
    UPLOAD_METADATA_INVALID = "upload_metadata_invalid"
    CONTENT_TYPE_NOT_ALLOWED = "content_type_not_allowed"
    CONTENT_TYPE_MISMATCH = "content_type_mismatch"
    UPLOAD_TOO_LARGE = "upload_too_large"
    TOO_MANY_UPLOADS = "too_many_uploads"
    UPLOAD_NOT_FOUND = "upload_not_found"
    UPLOAD_EXPIRED = "upload_expired"
    UPLOAD_OFFSET_MISMATCH = "upload_offset_mismatch"
    UPLOAD_LENGTH_EXCEEDED = "upload_length_exceeded"
    UPLOAD_CANNOT_RESUME = "upload_cannot_resume"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    CHECKSUM_INVALID = "checksum_invalid"
    CHECKSUM_ALGORITHM_UNSUPPORTED = "checksum_algorithm_unsupported"
    TUS_VERSION_UNSUPPORTED = "tus_version_unsupported"
    TUS_HEADER_INVALID = "tus_header_invalid"
    TUS_CONTENT_TYPE = "tus_content_type"
    # Never on the wire: caught inside the server, or only ever a 500 (`internal_error`).
    BLOB_STORE_ERROR = "blob_store_error"
    BLOB_KEY_INVALID = "blob_key_invalid"
    BLOB_RANGE_INVALID = "blob_range_invalid"
    BLOB_STORE_SPEC_INVALID = "blob_store_spec_invalid"
    MIGRATION_FAILED = "migration_failed"
    EXPRESSION_SYNTAX = "expression_syntax"
    EXPRESSION_NOT_EVALUABLE = "expression_not_evaluable"
    # Raised by the reference device itself, never received from the server.
    SYNC_ERROR = "sync_error"
    NOT_LOGGED_IN = "not_logged_in"
    PUSH_STALLED = "push_stalled"
    ENTITY_UNKNOWN = "entity_unknown"
    STORE_DEVICE_MISMATCH = "store_device_mismatch"
    UNSENT_OPS_OF_OTHER_USER = "unsent_ops_of_other_user"


# Codes a device never receives from the server; every other code is listed in docs/protocol.md.
LOCAL_CODES = frozenset(
    {
        ErrorCode.BLOB_STORE_ERROR,
        ErrorCode.BLOB_KEY_INVALID,
        ErrorCode.BLOB_RANGE_INVALID,
        ErrorCode.BLOB_STORE_SPEC_INVALID,
        ErrorCode.MIGRATION_FAILED,
        ErrorCode.EXPRESSION_SYNTAX,
        ErrorCode.EXPRESSION_NOT_EVALUABLE,
        ErrorCode.SYNC_ERROR,
        ErrorCode.NOT_LOGGED_IN,
        ErrorCode.PUSH_STALLED,
        ErrorCode.ENTITY_UNKNOWN,
        ErrorCode.STORE_DEVICE_MISMATCH,
        ErrorCode.UNSENT_OPS_OF_OTHER_USER,
    }
)


class CodedError(Exception):
    """Base of the errors the pure packages raise; the server maps each class to an HTTP status."""

    code: ClassVar[ErrorCode] = ErrorCode.BAD_REQUEST
