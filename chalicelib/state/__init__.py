"""Where a target's last sample, roster, observations and (later) alert state live."""

from .base import StateConflict, StateError, StateStore, TargetState, WorkerRecord

__all__ = ["StateConflict", "StateError", "StateStore", "TargetState", "WorkerRecord"]
