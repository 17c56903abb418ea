"""The audit's report as text: aligned rows, glyphs, colour only where it is wanted."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from ..model import Severity
from ..text import fmt_seconds, safe_text
from .report import CRITICAL, INFO, OK, UNKNOWN, WARNING, Report, Row, level_of

RULE = 64
_COLOURS = {
    OK: "\033[32m",
    WARNING: "\033[33m",
    CRITICAL: "\033[31m",
    UNKNOWN: "\033[2m",
    INFO: "\033[36m",
    "bold": "\033[1m",
    "dim": "\033[2m",
}
_RESET = "\033[0m"
_GLYPHS = {OK: "✓", WARNING: "!", CRITICAL: "✗", UNKNOWN: "?", INFO: "·"}
_ASCII = str.maketrans(
    {
        "✓": "+",
        "✗": "x",
        "·": "-",
        "↑": "^",
        "↓": "v",
        "→": "->",
        "≥": ">=",
        "═": "=",
        "•": "*",
        "—": "-",
        "×": "x",
    }
)


def use_colour(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


Paint = Callable[[str, str], str]


def render(report: Report, *, colour: bool = False) -> str:
    """The whole report: heading and status, each section, the recommendations, the verdict."""

    def paint(text: str, style: str) -> str:
        return f"{_COLOURS[style]}{text}{_RESET}" if colour and text else text

    rule = "═" * RULE
    status_style = {"healthy": OK}.get(report.level, report.level)
    lines = _heading(report, paint, status_style)
    for section in report.sections:
        lines.extend(["", paint(section.title, "bold"), *_rows(section.rows, paint)])
    lines.extend(["", rule, paint("Recommendations", "bold")])
    lines.extend(_recommendations(report, paint))
    closing = {
        "healthy": "All systems healthy",
        WARNING: "Warnings found",
        CRITICAL: "Critical problems found",
    }[report.level]
    lines.extend(
        [
            "",
            rule,
            paint(f"{_GLYPHS[status_style]} {closing} (exit {report.exit_code})", status_style),
            f"Audit completed in {report.elapsed:.1f} s",
        ]
    )
    return "\n".join(lines)


def _heading(report: Report, paint: Paint, status_style: str) -> list[str]:
    plural = "s" if report.samples != 1 else ""
    how = f"{report.samples} sample{plural}"
    if report.samples > 1:
        how += f", {fmt_seconds(report.interval)} apart"
    if report.deep:
        how += ", deep"
    plurals = {"warning": "warnings", "emergency": "emergencies"}
    summary = ", ".join(
        f"{report.counts[s.value]} "
        + (plurals.get(s.value, s.value) if report.counts[s.value] > 1 else s.value)
        for s in sorted((Severity(k) for k in report.counts), key=lambda s: -s.rank)
    )
    return [
        paint(f"Doorman audit — target {report.target}", "bold"),
        paint(f"{report.timestamp} · {how}", "dim"),
        "═" * RULE,
        paint(f"{_GLYPHS[status_style]} Status: {report.level.upper()}", status_style)
        + (f" ({summary})" if summary else ""),
    ]


def _rows(rows: Sequence[Row], paint: Paint) -> list[str]:
    """A section's rows, the cells aligned in columns (at most 40 characters wide)."""
    widths: dict[int, int] = {}
    for row in rows:
        for index, cell in enumerate(row.cells[:-1]):
            widths[index] = min(max(widths.get(index, 0), len(safe_text(cell))), 40)
    lines = []
    for row in rows:
        # Every cell escaped here too, whoever built the row (escaped text is unchanged).
        cells = [
            safe_text(cell).ljust(widths.get(i, 0)) if i < len(row.cells) - 1 else safe_text(cell)
            for i, cell in enumerate(row.cells)
        ]
        text = "  ".join(cells).rstrip()
        if row.note:
            text += " — " + paint(safe_text(row.note), row.level)
        lines.append(f"  {paint(_GLYPHS[row.level], row.level)} {text}")
    return lines


def _recommendations(report: Report, paint: Paint) -> list[str]:
    if not report.recommendations:
        return [f"  {paint(_GLYPHS[OK], OK)} nothing to do"]
    lines = []
    for r in report.recommendations:
        times = f" (×{r.count})" if r.count > 1 else ""
        tag = paint(f"[{r.severity.value}]", level_of(r.severity))
        lines.append(f"  • {tag} {safe_text(r.title)}{times}: {safe_text(r.text)}")
        if r.detail:
            more = " (the first of them)" if r.count > 1 else ""
            lines.append("    " + paint(safe_text(r.detail) + more, "dim"))
    return lines


def encodable(text: str, stream: TextIO) -> str:
    """``text``, with ASCII stand-ins for the glyphs when ``stream`` cannot encode them."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return text.translate(_ASCII).encode("ascii", "replace").decode("ascii")
    return text
