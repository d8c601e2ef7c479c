"""Every table of the application, in one list: Piccolo's app config and the engine binding use it.

Each domain keeps its tables in its own module (tables.py: identity; tables_forms.py; tables_blobs.py;
tables_sync.py) and adds its list here.
"""

from __future__ import annotations

from piccolo.table import Table

from server.db.tables import IDENTITY_TABLES
from server.db.tables_blobs import BLOB_TABLES
from server.db.tables_forms import FORM_TABLES
from server.db.tables_sync import SYNC_TABLES

ALL_TABLES: list[type[Table]] = [*IDENTITY_TABLES, *FORM_TABLES, *SYNC_TABLES, *BLOB_TABLES]
