"""How long sanitizing a huge name takes, beside one regex pass over the same text.

Names reach the sanitizer from the cluster and may be a megabyte long; they are cut to
SCRUB_MAX characters before scrubbing, so no name costs more than a cut one.
"""

from __future__ import annotations

import re
import time

from chalicelib.sanitize import safe_name, scrub

MEGABYTE = 1 << 20
# Dense shapes: text in which nearly every character starts a candidate match.
SHAPES = {
    "letters": "a",
    "mixed": "emails-jane.doe@example.org tasks.process_user_98765 10.0.0.1 +1 415 555 0199 ",
    "encoded": "jane%40.",
    "digits and dots": "1.2.",
    "phone fragments": "+1 415 ",
}
_ONE_PASS = re.compile(r"[0-9]+")


def _best_ms(fn: object, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, (time.perf_counter() - started) * 1000.0)
    return best


def bench_scrub() -> dict[str, float]:
    """The slowest shape: a 1 MB name sanitized (cut, then scrubbed), the whole 1 MB text
    scrubbed, and the baseline of one regex pass over it."""
    name_ms, whole_ms, pass_ms = 0.0, 0.0, 0.0
    for unit in SHAPES.values():
        text = (unit * (MEGABYTE // len(unit) + 1))[:MEGABYTE]
        name_ms = max(name_ms, _best_ms(lambda text=text: safe_name(text)))
        whole_ms = max(whole_ms, _best_ms(lambda text=text: scrub(text), runs=1))
        pass_ms = max(pass_ms, _best_ms(lambda text=text: _ONE_PASS.sub("#", text)))
    return {
        "scrub_1mb_name_ms": round(name_ms, 1),
        "scrub_1mb_text_ms": round(whole_ms, 1),
        "scrub_1mb_one_pass_ms": round(pass_ms, 1),
    }
