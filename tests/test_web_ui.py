"""The web page in a real headless Chromium (Debian's, driven by Playwright): upload, wait for ready,
ask, watch the streamed answer, open a citation; a malicious filename shows as text and runs nothing."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import ROOT
from tests.docmaker import FACT_PAGES, NEAR_TOPIC_UNANSWERED, make_pdf

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
EVIL = "<img src=x onerror=window.__pwned=1><script>window.__pwned=2</script>.txt"


@pytest.fixture(scope="module")
def page(service, tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`.ci/run` does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.goto(service.url + "/")
        yield pg
        browser.close()


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_upload_ask_stream_and_open_a_citation(service, page, tmp_path):
    from playwright.sync_api import expect

    # The page loads nothing from outside the service.
    external = []
    page.on("request", lambda r: external.append(r.url) if not r.url.startswith(service.url) else None)
    page.reload()
    expect(page.locator("#ready")).to_have_text("ready", timeout=60_000)
    page.fill("#collection", "web")
    page.locator("#collection").dispatch_event("change")
    pdf = tmp_path / "harbour-web.pdf"
    pdf.write_bytes(make_pdf(FACT_PAGES + ["This copy was uploaded through the web page."]))
    page.set_input_files("#files", str(pdf))
    row = page.locator("#docs tbody tr", has_text="harbour-web.pdf")
    expect(row.locator(".status")).to_have_text("ready", timeout=300_000)
    expect(row.locator("td").nth(2)).to_have_text("4")  # pages

    page.fill("#question", "What color is the Quintaro bridge?")
    page.select_option("#mode", "auto")
    page.click("#ask-button")
    expect(page.locator("#mode-line")).to_contain_text("mode off", timeout=120_000)
    expect(page.locator("#sources li").first).to_be_visible(timeout=300_000)
    assert page.locator("#answer").inner_text().strip()
    cite = page.locator("#answer button.cite").first
    cite.click()
    pop = page.locator("#passage-pop")
    expect(pop).to_be_visible()
    expect(pop).to_contain_text("harbour-web.pdf")
    expect(pop).to_contain_text("page 2")
    expect(pop).to_contain_text("orange")
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    page.screenshot(path=str(artifacts / "web-answer.png"), full_page=True)

    # A question the document does not answer: said plainly, no sources, the closest passages listed.
    page.fill("#question", NEAR_TOPIC_UNANSWERED)
    page.click("#ask-button")
    expect(page.locator("#answer")).to_contain_text("do not cover", timeout=300_000)
    expect(page.locator("#related li").first).to_be_visible()
    expect(page.locator("#related")).to_contain_text("harbour-web.pdf")
    expect(page.locator("#related")).to_contain_text("Zorblax")
    assert page.locator("#sources li").count() == 0 and page.locator("#sources-title").is_hidden()
    page.screenshot(path=str(artifacts / "web-not-covered.png"), full_page=True)
    assert external == []


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_malicious_filename_is_shown_as_text(service, page, tmp_path):
    from playwright.sync_api import expect

    page.fill("#collection", "web-evil")
    page.locator("#collection").dispatch_event("change")
    evil = tmp_path / "evil"
    evil.mkdir()
    # The file on disk has a harmless name; the page sends it under the hostile one.
    page.set_input_files("#files", files=[{"name": EVIL, "mimeType": "text/plain",
                                           "buffer": b"The <script>alert(1)</script> gull nests on the pier."}])
    row = page.locator("#docs tbody tr", has_text="onerror")
    expect(row.locator(".status")).to_have_text("ready", timeout=300_000)
    expect(row.locator("td.file")).to_have_text(EVIL)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#docs img").count() == 0 and page.locator("#docs script").count() == 0
    # Its text, containing a script tag, is shown as text in the passage view too.
    page.fill("#question", "Where does the gull nest?")
    page.select_option("#mode", "off")
    page.click("#ask-button")
    expect(page.locator("#stats")).not_to_be_empty(timeout=300_000)
    if page.locator("#answer button.cite").count():
        page.locator("#answer button.cite").first.click()
        expect(page.locator("#passage-pop")).to_contain_text("<script>alert(1)</script>")
    assert page.evaluate("window.__pwned") is None
