"""The reference device: a client of the sync protocol, not part of it.

`store` is its local SQLite store, `transport` talks HTTP with retries and tokens, `client` holds
the device's rules of the protocol (PROTOCOL.md "Devices' side"), and `simulator` drives many of
them against a running server (`fieldsync simulate`).
"""
