"""The words a finding is shown with on the dashboard: a Diagnosis panel row (severity, kind, where,
since which step, a short message), its detail lines (evidence, suggestion), the event log's line when
it opens or closes, and the header's chip. Plain text (no markup): the widgets colour it by severity.

``tuitrain diagnose`` prints :func:`tuitrain.diagnosis.engine.line`; this is the dashboard's shorter
form of the same record."""

from __future__ import annotations

import textwrap

from tuitrain.diagnosis.finding import fmt
from tuitrain.events import Finding

MARKS = {"error": "✗", "warning": "!", "info": "·"}  # the event log's marks for the same levels
KIND_W = 20  # a panel row's kind column, at most
WHERE_W = 26  # ... and its where column


def where(f: Finding) -> str:
    """The layer or module, or "run" for a finding about the run as a whole (the loss rules)."""
    return f.layer or "run"


def since(f: Finding) -> str:
    """ "since 1,200" while open; "1,200–3,400 closed" once it stopped holding."""
    if f.last_step is None:
        return f"since {f.first_step:,}"
    return f"{f.first_step:,}–{f.last_step:,} closed"


def evidence(f: Finding) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in f.evidence.items())


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells with an ellipsis (these strings are plain, one cell a char)."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def row(f: Finding, width: int, kind_w: int = KIND_W, detail: bool = False) -> tuple[str, str]:
    """A panel row for ``f`` at ``width`` cells: (the severity head, the rest), the head padded so
    that the rows' kinds line up. ``detail`` appends the evidence and the suggestion (a wide panel)."""
    head = f"{MARKS[f.severity]} {f.severity:<7} "
    kind = f.kind.ljust(min(kind_w, KIND_W))
    body = f"{kind}  {clip(where(f), WHERE_W)}  {since(f)}  {f.message}"
    if detail:
        ev = evidence(f)
        body += (f" [{ev}]" if ev else "") + (f" → {f.suggestion}" if f.suggestion else "")
    return head, clip(body, width - len(head))


def details(f: Finding, width: int, lines: int, cut: bool = False) -> list[str]:
    """Up to ``lines`` indented lines under the top row: the whole message when the row ``cut`` it,
    what usually fixes it and the evidence, each wrapped; with few lines the fix comes first, then
    the evidence, then the message, and a part that does not fit whole ends in "…"."""
    room = max(8, width - 4)
    fix = f"→ {f.suggestion}" if f.suggestion else ""
    ev = f"evidence: {evidence(f)}" if f.evidence else ""
    if lines <= 0:
        return []
    if lines == 1:
        both = "  ".join(p for p in (fix, ev) if p)
        return [clip("    " + both, width)] if both else []
    blocks = {
        "msg": textwrap.wrap(f.message, room) if cut and f.message else [],
        "fix": textwrap.wrap(fix, room, subsequent_indent="  ") if fix else [],
        "ev": textwrap.wrap(ev, room, subsequent_indent="  ") if ev else [],
    }
    give, left = dict.fromkeys(blocks, 0), lines
    for k in ("fix", "ev", "msg"):  # a line each first, in this order, then the rest in the same order
        if blocks[k] and left:
            give[k], left = 1, left - 1
    for k in ("fix", "ev", "msg"):
        more = min(left, len(blocks[k]) - give[k])
        give[k], left = give[k] + more, left - more
    out = []
    for k in ("msg", "fix", "ev"):
        part, n = blocks[k][: give[k]], give[k]
        if part and n < len(blocks[k]):  # the last line it gets holds as much of the rest as fits
            rest = " ".join(line.strip() for line in blocks[k][n - 1 :])
            part[-1] = clip(("  " if n > 1 and k != "msg" else "") + rest, room)
        out += ["    " + line for line in part]
    return out


def log_line(f: Finding) -> tuple[str, str]:
    """The event log's (level, message) for a finding's row: an opening in its severity's colour; a
    closing as plain information, saying "closed" and the steps it held."""
    at = f" at {f.layer}" if f.layer else ""
    if f.last_step is None:
        return f.severity, f"{f.severity} {f.kind}{at} since step {f.first_step:,}: {f.message}"
    return "info", f"closed: {f.kind}{at} (held steps {f.first_step:,}–{f.last_step:,})"


def log_step(f: Finding) -> int:
    """The step an event-log line sits at: when the finding was seen (found offline: where it began,
    or ended for a closing)."""
    if f.at_step >= 0:
        return f.at_step
    return f.first_step if f.last_step is None else f.last_step


def counts(findings: list[Finding]) -> str:
    """ "1 error · 2 warnings · 1 closed" for a panel's subtitle ("" when there are none)."""
    out = []
    for sev in ("error", "warning", "info"):
        n = sum(1 for f in findings if f.is_open and f.severity == sev)
        if n:
            out.append(f"{n} {sev}{'s' if n > 1 and sev != 'info' else ''}")
    closed = sum(1 for f in findings if not f.is_open)
    if closed:
        out.append(f"{closed} closed")
    return " · ".join(out)


def chip(open_findings: list[Finding], press: bool, width: int = 80) -> tuple[str, str] | None:
    """The header's (severity, text) about the worst open findings, e.g. "1 error: signal_collapse —
    press d", at most ``width`` cells (shorter forms first drop the kind, then the words); None when no
    warning or error is open. ``press``: the panel has not shown them yet."""
    if not open_findings:
        return None
    sev = open_findings[0].severity
    same = [f for f in open_findings if f.severity == sev]
    kinds = list(dict.fromkeys(f.kind for f in same))
    more = f" +{len(kinds) - 1}" if len(kinds) > 1 else ""
    n = len(same)
    count = f"{MARKS[sev]} {n} {sev}{'s' if n > 1 else ''}"
    forms = [
        f"{count}: {kinds[0]}{more}" + (" — press d" if press else ""),
        count + (" — d" if press else ""),
    ]
    return sev, next((t for t in forms if len(t) <= width), clip(forms[-1], width))
