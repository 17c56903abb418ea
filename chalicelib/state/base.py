"""The state store protocol and the plain data it keeps (all of it already sanitized)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..model import Observation


class StateError(Exception):
    """The state store cannot be read or written; the message says which and why."""


class StateConflict(StateError):
    """Another check committed first (the version read is no longer current)."""


@dataclass(frozen=True)
class WorkerRecord:
    """What Doorman remembers of a worker, by hash only."""

    last_seen: float | None = None
    silent_since: float | None = None
    forgotten: bool = False
    concurrency: int | None = None


@dataclass(frozen=True)
class TargetState:
    version: int = 0
    last_sample: dict[str, Any] | None = None
    roster: dict[str, WorkerRecord] = field(default_factory=dict)
    observations: dict[str, Observation] = field(default_factory=dict)
    visibility_timeout: float | None = None
    last_discovery: float | None = None

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body.pop("version")
        return body

    @classmethod
    def from_json(cls, version: int, body: dict[str, Any]) -> TargetState:
        try:
            return cls(
                version=version,
                last_sample=body.get("last_sample"),
                roster={k: WorkerRecord(**v) for k, v in (body.get("roster") or {}).items()},
                observations={
                    k: Observation(**v) for k, v in (body.get("observations") or {}).items()
                },
                visibility_timeout=body.get("visibility_timeout"),
                last_discovery=body.get("last_discovery"),
            )
        except (TypeError, AttributeError) as exc:
            raise StateError(f"stored state has an unexpected shape ({exc})") from None


class StateStore(Protocol):
    def load(self, target: str) -> TargetState:
        """The stored state (version 0 and empty when there is none). Raises StateError."""
        ...

    def commit(self, target: str, state: TargetState, expected_version: int) -> TargetState:
        """Write ``state`` if the stored version is still ``expected_version``.

        Returns the state with its new version. Raises StateConflict when another writer
        committed first, StateError when the store cannot be written.
        """
        ...

    def close(self) -> None: ...
