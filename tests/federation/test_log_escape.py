"""Log records cannot forge lines: control characters in a message are escaped."""

from __future__ import annotations

import io
import logging

from federation.log_escape import EscapingFormatter, escape_controls, has_controls


def test_escape_controls_makes_every_control_character_visible() -> None:
    text = "a\nb\rc\td\x1b[31me\x00f\u2028g\u202eh\x85i"
    escaped = escape_controls(text)
    assert escaped == "a\\nb\\rc\\td\\x1b[31me\\x00f\\u2028g\\u202eh\\x85i"
    assert not has_controls(escaped) and has_controls(text)
    assert escape_controls("北海道 ✓ plain") == "北海道 ✓ plain"


def test_forged_log_line_stays_on_one_line() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(EscapingFormatter("%(levelname)s %(name)s %(message)s"))
    log = logging.getLogger("hamanasu.test.escape")
    log.addHandler(handler)
    log.propagate = False
    level, disabled = log.level, logging.root.manager.disable
    log.setLevel(logging.INFO)  # whatever another test in this worker set or disabled
    logging.disable(logging.NOTSET)
    try:
        log.warning("job %s (%s): approve", "j1", "lbw\nINFO hamanasu.node.service job j2: approve")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("run failed: %s", "x\r\nERROR forged")
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        logging.disable(disabled)
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "WARNING hamanasu.test.escape job j1 (lbw\\nINFO hamanasu.node.service job j2: approve): "
        "approve"
    )
    assert lines[1] == "ERROR hamanasu.test.escape run failed: x\\r\\nERROR forged"
    assert lines[2] == "Traceback (most recent call last):"  # the code's traceback keeps its lines
