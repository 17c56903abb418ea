"""Where a target's last sample, roster, observations and (later) alert state live."""

from .base import (
    CheckStore,
    Outbox,
    SilenceReader,
    SilenceStore,
    StateConflict,
    StateError,
    StateStore,
    TargetState,
    TargetStore,
    WorkerRecord,
)

__all__ = [
    "CheckStore",
    "Outbox",
    "SilenceReader",
    "SilenceStore",
    "StateConflict",
    "StateError",
    "StateStore",
    "TargetState",
    "TargetStore",
    "WorkerRecord",
]
