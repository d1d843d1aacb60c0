"""The console in a real browser: Playwright drives Debian's headless Chromium against the
coordinator served by uvicorn on a loopback port, with a scripted runner (3 quick rounds), and
city-hospital's node state pushed as its service does (ledger, signed head, consents, budget):
the node admin sees the budget chart; the auditor checks ledger entries' inclusion proofs in the
page (and a tampered proof fails there).

Screenshots of each view go to ``test-output/console/``. Without ``/usr/bin/chromium`` the
tests skip, naming the missing browser (``apt-get install chromium``).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "console"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"browser missing: Chromium not found at {CHROMIUM} (apt-get install chromium)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, world_factory: Any
) -> Iterator[tuple[str, dict[str, str], Any]]:
    import uvicorn

    app, tokens = world_factory(tmp_path_factory.mktemp("console") / "coord", delay=0.4, audit=True)
    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", tokens, app
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            args=ARGS,
            headless=True,
            viewport={"width": 1280, "height": 860},
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


def _sign_in(context: Any, base: str, token: str) -> Any:
    context.clear_cookies()
    page = context.new_page()
    page.goto(f"{base}/console/login?lang=en")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    return page


# WCAG 2 contrast of each element's text against the first opaque background behind it.
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


def _contrast(page: Any, selectors: list[str]) -> dict[str, float]:
    ratios: dict[str, float] = page.evaluate(CONTRAST_JS, selectors)
    low = {k: round(v, 2) for k, v in ratios.items() if v < 4.5}
    assert not low, f"text contrast below 4.5:1: {low}"
    return ratios


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_full_flow_researcher_admin_auditor(
    server: tuple[str, dict[str, str], Any], browser: Any, spec_toml: str
) -> None:
    base, tokens, app = server
    SPEC_TOML = spec_toml  # noqa: N806

    # Sign-in page: labelled token field, keyboard reachable; a bad token is refused.
    page = browser.new_page()
    page.goto(f"{base}/console/login?lang=en")
    _shot(page, "01-login")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.get_by_label("API token").fill("hmn_not_a_token")
    page.get_by_role("button", name="Sign in").click()
    assert "not valid" in page.get_by_role("alert").inner_text()
    assert "hmn_not_a_token" not in page.url
    page.close()

    # Researcher: a bad spec shows its error beside the field and submits nothing.
    page = _sign_in(browser, base, tokens["researcher"])
    assert page.url.endswith("/console/jobs")
    cookie = next(c for c in browser.cookies() if c["name"] == "hmn_session")
    assert (
        cookie["httpOnly"]
        and cookie["sameSite"] == "Strict"
        and cookie["value"] != tokens["researcher"]
    )
    page.get_by_label("Job spec (TOML)").fill(
        SPEC_TOML.replace('"smoking"]', '"smoking", "shoe_size"]')
    )
    page.get_by_role("button", name="Submit").click()
    err = page.locator("#spec-error")
    assert err.get_attribute("data-field") == "features" and "shoe_size" in err.inner_text()
    assert page.get_by_label("Job spec (TOML)").get_attribute("aria-invalid") == "true"
    _shot(page, "02-researcher-invalid-spec")
    _contrast(
        page,
        [
            "h1",
            "label",
            ".help",
            "#spec-error",
            "button[type=submit]",
            "header a",
            ".who",
            "th",
            "td",
        ],
    )
    page.get_by_label("Job spec (TOML)").fill(SPEC_TOML.replace("epsilon = 2.0", "epsilon = 50.0"))
    page.get_by_role("button", name="Submit").click()
    assert page.locator("#spec-error").get_attribute("data-field") == "privacy.epsilon"
    page.get_by_label("Job spec (TOML)").fill("kind = ")
    page.get_by_role("button", name="Submit").click()
    assert "malformed TOML" in page.locator("#spec-error").inner_text()
    assert app.state.store.list_jobs(None, None, 10, 0) == []

    # A good spec, loaded from a .toml file into the textarea: submitted, the job page follows it.
    page.get_by_label("Or load a TOML file").set_input_files(
        files=[{"name": "lbw.toml", "mimeType": "text/plain", "buffer": SPEC_TOML.encode()}]
    )
    page.wait_for_function("document.querySelector('#spec').value.includes('lbw-console')")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(re.compile(r"/console/jobs/[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    assert page.locator("#job-state").inner_text() == "awaiting_approval"
    _shot(page, "03-researcher-job-awaiting")

    # The researcher's session may not open the approval page (nor the auditor's).
    for path in ("/console/node", "/console/audit"):
        response = page.goto(base + path)
        assert response is not None and response.status == 403
    _shot(page, "04-researcher-forbidden")

    # Node admin: the job with its purpose, features and ε; a rejection needs a reason; approve.
    page = _sign_in(browser, base, tokens["node_admin"])
    assert page.url.endswith("/console/node")
    review = page.locator(f"#review-{job_id}")
    assert (
        "hokkaido-university" in review.inner_text()
        and review.locator(".eps").inner_text() == "2.0"
    )
    assert "bmi_pre" in review.inner_text()
    page.wait_for_function("document.querySelector('#budget-chart').width > 0")
    # The budget per domain and period: a Chart.js chart (spent, reserved, cap) and a table.
    datasets = page.evaluate(
        "Chart.getChart(document.querySelector('#budget-chart')).data.datasets"
        ".map((d) => [d.label, d.data])"
    )
    assert [d[0] for d in datasets] == [
        "ε spent",
        "ε reserved (active jobs)",
        "ε cap of the period",
    ]
    # ε spent is the accountant's value for noise calibrated to ε 1.5 (within 1e-4 below it)
    assert [d[1][0] for d in datasets] == pytest.approx([1.5, 2.0, 10.0], rel=1e-4)
    budget_row = page.locator("#budget-table tbody tr").first.inner_text()
    assert "births" in budget_row and "1.500" in budget_row and "10.000" in budget_row
    _shot(page, "05-node-admin-awaiting")
    review.get_by_role("button", name="Reject").click()
    assert "needs a reason" in page.locator(f"#err-{job_id}").inner_text()
    _contrast(
        page, [".facts dt", ".facts dd", f"#err-{job_id}", "button.danger", "button[value=approve]"]
    )
    # Keyboard only: from the reason field, Tab reaches Approve and Enter presses it.
    page.locator(f"#review-{job_id}").get_by_label("Reason (needed to reject)").fill(
        "cohort checked"
    )
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.value") == "approve"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/console/node")
    assert page.locator(f"#review-{job_id}").count() == 0
    page.set_viewport_size({"width": 768, "height": 1024})
    page.goto(f"{base}/console/node?lang=ja")
    assert page.locator("h1").inner_text().startswith("ノード管理者")
    _shot(page, "06-node-admin-approved-ja-tablet")
    page.goto(f"{base}/console/node?lang=en")
    page.set_viewport_size({"width": 1280, "height": 860})

    # Researcher follows the job round by round until it succeeds; the chart has 3 rounds.
    page = _sign_in(browser, base, tokens["researcher"])
    page.goto(f"{base}/console/jobs/{job_id}")
    page.wait_for_selector("#job[data-done=succeeded]", timeout=20_000)
    page.wait_for_function("document.querySelector('#metrics-chart').dataset.rounds === '3'")
    assert page.locator("#job-round").inner_text() == "3"
    assert page.locator("#downloads").is_visible()
    with page.expect_download() as dl:
        page.locator("#dl-result").click()
    assert dl.value.suggested_filename == f"{job_id}-result.json"
    _shot(page, "07-researcher-job-succeeded")

    # Japanese labels, kept by cookie; tablet width.
    page.set_viewport_size({"width": 768, "height": 1024})
    page.goto(f"{base}/console/jobs?lang=ja")
    assert page.locator("h1").inner_text() == "研究者"
    page.goto(f"{base}/console/jobs")
    assert page.locator("html").get_attribute("lang") == "ja"
    _shot(page, "08-researcher-jobs-ja-tablet")
    page.goto(f"{base}/console/jobs?lang=en")
    page.set_viewport_size({"width": 1280, "height": 860})

    # Another researcher may not open this job.
    page = _sign_in(browser, base, tokens["other"])
    response = page.goto(f"{base}/console/jobs/{job_id}")
    assert response is not None and response.status == 403

    # Auditor: every job with purpose, requester, approvals and ε per node.
    page = _sign_in(browser, base, tokens["auditor"])
    assert page.url.endswith("/console/audit")
    row = page.locator(f"#audit-{job_id}").inner_text()
    assert "hokkaido-university" in row and "city-hospital: approved (hospital-admin)" in row
    assert "city-hospital: 1.500" in row and "HMB" in row
    page.wait_for_function("document.querySelector('#eps-chart').width > 0")
    _shot(page, "09-auditor")


def test_auditor_checks_ledger_entries_in_the_page(
    server: tuple[str, dict[str, str], Any], browser: Any
) -> None:
    base, tokens, app = server

    # The nodes' signed heads with when they were checked and the result; consent counts.
    page = _sign_in(browser, base, tokens["auditor"])
    row = page.locator("#ledger-city-hospital")
    assert "verified" in row.inner_text() and "65" in row.inner_text()
    assert "not checked yet" in page.locator("#ledger-women-clinic").inner_text()
    consent = page.locator("#consent-city-hospital")
    assert consent.locator("td[data-purpose=GRU]").inner_text() == "40"
    assert consent.locator("td[data-purpose=NRES]").inner_text().startswith("< 10")
    assert "by difference" in consent.locator("td[data-purpose=HMB]").inner_text()
    _contrast(page, [".result-ok", "#consent-city-hospital td", ".help", "code.hash"])
    _shot(page, "10-auditor-ledgers-consent")

    # The ledger browser: filter by kind, then check an entry's inclusion proof in the page.
    page.get_by_role("link", name="Browse ledger: city-hospital").click()
    page.wait_for_url(f"{base}/console/audit/nodes/city-hospital")
    page.get_by_label("Kind").select_option("budget.charged")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"kind=budget.charged"))
    kinds = page.locator("#ledger-entries tbody tr td:nth-child(3)").all_inner_texts()
    assert kinds == ["budget.charged", "budget.charged"]
    page.goto(f"{base}/console/audit/nodes/city-hospital?order=asc")
    page.get_by_role("button", name="Check entry 3 in this browser").click()
    page.wait_for_selector("#proof-3[data-verified]")
    result = page.locator("#proof-3")
    assert result.get_attribute("data-verified") == "true", result.inner_text()
    assert "Verified in this browser" in result.inner_text()
    assert "signature by the node's key valid" in result.inner_text()
    # Keyboard only: focus another entry's button and press Enter.
    page.get_by_role("button", name="Check entry 12 in this browser").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#proof-12[data-verified=true]")

    # A proof altered on its way to the page is caught by the page itself.
    def tamper(route: Any) -> None:
        body = route.fetch().json()
        first = body["proof"][0]
        body["proof"][0] = ("0" if first[0] != "0" else "1") + first[1:]
        route.fulfill(json=body)

    page.route("**/ledger/7/proof", tamper)
    page.get_by_role("button", name="Check entry 7 in this browser").click()
    page.wait_for_selector("#proof-7[data-verified]")
    assert page.locator("#proof-7").get_attribute("data-verified") == "false"
    assert "Not verified" in page.locator("#proof-7").inner_text()
    _contrast(page, ["#proof-3", "#proof-7", "code.payload", "select", "label"])
    _shot(page, "11-auditor-ledger-inclusion-checked")

    # Japanese labels at tablet width; a researcher may not open the ledger browser.
    page.set_viewport_size({"width": 768, "height": 1024})
    page.goto(f"{base}/console/audit/nodes/city-hospital?lang=ja&order=asc")
    assert page.locator("h1").inner_text().startswith("ノードの台帳")
    page.get_by_role("button", name="項目0をこのブラウザで検証").click()
    page.wait_for_selector("#proof-0[data-verified=true]")
    assert "このブラウザで検証済み" in page.locator("#proof-0").inner_text()
    _shot(page, "12-auditor-ledger-ja-tablet")
    page.goto(f"{base}/console/audit?lang=en")
    page.set_viewport_size({"width": 1280, "height": 860})
    page = _sign_in(browser, base, tokens["researcher"])
    response = page.goto(f"{base}/console/audit/nodes/city-hospital")
    assert response is not None and response.status == 403
