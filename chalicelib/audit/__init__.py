"""``doorman audit``: a human report of one cluster, with an exit code for CI.

Three layers, each its own module:

- ``sampling``: N ordinary checks S seconds apart (collect, then the pure ``check.step``),
  with the stored state (roster, observations) read once and carried forward in memory, so
  the later samples know the workers and oldest messages the earlier ones saw. Nothing is
  committed: the audit changes no alert state and sends nothing. ``--deep`` then asks Redis
  and the workers for their settings.
- ``report`` (pure): the findings of the last sample and the trends of the audit's own
  samples (no pending-for-N) become sections, rows and recommendations; their severities
  decide the exit code: 2 when any is critical or an emergency, 1 for warnings (config risks
  and workers at capacity included), else 0.
- ``render``: the report as text; names are printed with control characters escaped, and
  colour is used only on a terminal when ``NO_COLOR`` is not set.

Everything shown comes from sanitized samples and the allow-listed worker settings.
"""
