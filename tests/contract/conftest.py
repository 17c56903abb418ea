"""Every state store passes the same contract: SQLite in a temporary folder, DynamoDB on moto."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.state.base import StateStore
from chalicelib.state.dynamodb import DynamoStore
from chalicelib.state.sqlite import SqliteStore
from tests.support.moto_server import DynamoTable, dynamodb, moto_server

__all__ = ["Backend", "backend", "dynamodb", "moto_server"]


class Backend:
    """Opens stores on one backing store; each ``open()`` is a new store, as a new check is."""

    def __init__(self, kind: str, *, path: Path | None = None, table: DynamoTable | None = None):
        self.kind = kind
        self.path = path
        self.table = table
        self._opened: list[StateStore] = []

    def open(self, **options: Any) -> StateStore:
        store: StateStore
        if self.table is not None:
            store = DynamoStore(self.table.name, self.table.client, **options)
        else:
            store = SqliteStore(str(self.path), **options)
        self._opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        made = Backend("sqlite", path=tmp_path / "state.db")
    else:
        made = Backend("dynamodb", table=request.getfixturevalue("dynamodb"))
    try:
        yield made
    finally:
        made.close_all()
