"""The node console in a real browser: Playwright drives Debian's headless Chromium against the
admin app served by ``serve_admin`` on a loopback port. The admin signs in and approves a job
with the keyboard only (labels find the fields; Tab and Enter do the rest), the coordinator
records the approval, the Japanese labels show after the switch, and text contrast is at
least 4.5:1. Screenshots of each view go to ``test-output/node-console/``.

Without ``/usr/bin/chromium`` the tests skip, naming the missing browser.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nodes.admin_api import serve_admin

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "node-console"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"browser missing: Chromium not found at {CHROMIUM} (apt-get install chromium)",
)

CONTRAST_JS = """(selectors) => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = (c) => { const v = rgb(c).slice(0, 3).map((x) => { x /= 255;
    return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const bg = (el) => { for (; el; el = el.parentElement) {
    const c = getComputedStyle(el).backgroundColor; const a = rgb(c);
    if (a.length < 4 || a[3] > 0) return c; }
    return "rgb(255, 255, 255)"; };
  const out = {};
  for (const sel of selectors) { const el = document.querySelector(sel); if (!el) continue;
    const a = lum(getComputedStyle(el).color), b = lum(bg(el));
    out[sel] = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05); }
  return out;
}"""


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_admin_approves_with_the_keyboard_in_a_browser(admin_world, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    w = admin_world
    job_id = w.submit(2.0)
    w.service.poll_once()
    stop = threading.Event()
    server = serve_admin(w.admin_app, "127.0.0.1", 0, stop)
    while not server.server.started:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{server.port}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(tmp_path / "profile"),
                executable_path=str(CHROMIUM),
                args=ARGS,
                headless=True,
                viewport={"width": 1100, "height": 900},
            )
            context.set_default_timeout(15_000)
            page = context.new_page()
            page.goto(f"{base}/console/login?lang=en")
            _shot(page, "login")
            page.get_by_label("Node admin token").fill(w.tokens["node_admin"])
            page.keyboard.press("Enter")
            page.wait_for_url(f"{base}/console/jobs")
            assert page.locator(f"#job-{job_id}").is_visible()
            _shot(page, "jobs")

            reason = page.get_by_label("Reason for approving (optional)")
            reason.focus()
            page.keyboard.type("IRB 2026-14")
            page.keyboard.press("Tab")  # to the Approve button
            assert page.evaluate("document.activeElement.textContent.trim()") == "Approve"
            page.keyboard.press("Enter")
            page.wait_for_load_state()
            assert page.get_by_role("status").first.inner_text().startswith("Approved job")
            approval = w.approval(job_id)
            assert approval.status == "approved" and approval.reasons[0].message == "IRB 2026-14"

            ratios = page.evaluate(CONTRAST_JS, ["h1", ".facts dt", ".sections a", "button"])
            assert ratios and min(ratios.values()) >= 4.5, ratios

            page.get_by_role("link", name="日本語").click()
            page.wait_for_load_state()
            assert page.locator("html").get_attribute("lang") == "ja"
            page.get_by_role("link", name="プライバシー予算").click()
            page.wait_for_load_state()
            assert page.locator("#budget-table").is_visible()
            loaded = page.evaluate("document.querySelector('.chart img').naturalWidth")
            assert loaded > 0  # the PNG chart came from the node itself
            _shot(page, "budget-ja")
            page.get_by_role("link", name="ポリシー").click()
            _shot(page, "policy-ja")
            page.get_by_role("link", name="台帳").click()
            page.get_by_role("button", name="台帳を検証する").click()
            page.wait_for_load_state()
            assert page.locator("#verification .ok").is_visible()
            _shot(page, "ledger-ja")
            context.close()
    finally:
        stop.set()
        server.join(10)
