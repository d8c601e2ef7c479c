"""Piccolo's configuration module (PICCOLO_CONF=server.db.piccolo_conf).

`DB` is replaced at start-up by `server.db.engine.use_engine`, so Piccolo's migration machinery,
which looks the engine up through this module, always uses the engine the settings chose.
"""

import os

from piccolo.conf.apps import AppRegistry
from piccolo.engine.base import Engine
from piccolo.engine.sqlite import SQLiteEngine

DB: Engine = SQLiteEngine(path=os.environ.get("FIELDSYNC_PICCOLO_SQLITE", "var/fieldsync.db"))

APP_REGISTRY = AppRegistry(apps=["server.db.piccolo_app"])
