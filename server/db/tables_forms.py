"""Forms and their immutable versions (issue: forms)."""

from __future__ import annotations

from piccolo.columns import (
    JSON,
    UUID,
    BigInt,
    BigSerial,
    Bytea,
    ForeignKey,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from server.db.tables import AppUser


class Form(Table, tablename="form"):
    form_id = Varchar(length=64, primary_key=True)  # the XLSForm settings sheet's form_id
    title = Varchar(length=300, default="")
    state = Varchar(length=10, default="open")  # open | closing | closed
    # Roles that fill this form (device form lists are filtered by it); admins see every form.
    roles = JSON(default=[])
    current_version = Varchar(length=64, null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class FormVersion(Table, tablename="form_version"):
    """A draft (one per form, replaced by each upload) or a published, immutable version."""

    id = BigSerial(primary_key=True)
    # "<form_id>@<version>" for published versions, "<form_id>#draft" for the draft: unique either way.
    key = Varchar(length=140, unique=True)
    form = ForeignKey(references=Form, null=False)
    version = Varchar(length=64, null=True, default=None)
    status = Varchar(length=10)  # draft | published
    hash = Varchar(length=64)
    spec = JSON()
    xform = Text()
    source = Bytea()
    source_filename = Varchar(length=255, default="")
    source_kind = Varchar(length=10)  # xlsform | xform
    warnings = JSON(default=[])
    created_at = Timestamptz(default=TimestamptzNow())
    created_by = ForeignKey(references=AppUser, null=True)
    published_at = Timestamptz(null=True, default=None)
    published_by = ForeignKey(references=AppUser, null=True)


class FormAttachment(Table, tablename="form_attachment"):
    """A media file a form declares (an image, a CSV lookup), uploaded by an admin and served to
    ODK Collect with the form. One per form and file name: a new upload replaces it."""

    id = BigSerial(primary_key=True)
    key = Varchar(length=330, unique=True)  # "<form_id>/<filename>"
    form = ForeignKey(references=Form, null=False)
    filename = Varchar(length=255)
    content_type = Varchar(length=127)
    size = BigInt()
    md5 = Varchar(length=32)  # the manifest's hash: of exactly the bytes served
    content = Bytea()
    uploaded_at = Timestamptz(default=TimestamptzNow())
    uploaded_by = UUID(null=True, default=None)


FORM_TABLES: list[type[Table]] = [Form, FormVersion, FormAttachment]
