"""Analysis over sanitized samples: pure functions, no I/O."""
