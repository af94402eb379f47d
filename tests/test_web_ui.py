"""The web page in a real headless Chromium (Debian's, driven by Playwright): upload, wait for ready,
ask, watch the streamed answer, open a citation; a malicious filename shows as text and runs nothing;
the layout holds from a wide screen down to a phone."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import ROOT, start_service, stop_service
from tests.docmaker import FACT_PAGES, NEAR_TOPIC_UNANSWERED, make_pdf

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
EVIL = "<img src=x onerror=window.__pwned=1><script>window.__pwned=2</script>.txt"


@pytest.fixture(scope="module")
def browser():
    """One browser for the module: Playwright's sync API allows one running instance per thread."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`.ci/run` does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(service, browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.goto(service.url + "/")
    yield pg
    pg.close()


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


# --- layout at common widths (no language model needed) ---------------------------------------------

LONG_PATHS = [
    "manuals/networking/" + "a-very-long-folder-name-without-any-spaces-" * 3 + "/interfaces.txt",
    "Quarterly_operations_report_for_the_northern_harbour_district_with_all_appendices_final_v12.txt",
    "notes.txt",
]
WIDTHS = [(1400, 900), (1024, 768), (800, 900), (390, 844)]
SCREENSHOTS = {1400, 390}


@pytest.fixture(scope="module")
def documents_service(tmp_path_factory):
    """Documents of every shape the table shows: long paths, a PDF with pages, a failure with its reason."""
    svc = start_service(tmp_path_factory.mktemp("web-layout"), None, "sqlite", engine=False)
    try:
        files = [(p, f"Note {i} about the harbour's {p.split('/')[0]}.".encode(), "text/plain")
                 for i, p in enumerate(LONG_PATHS)]
        files += [("reports/harbour-facts-with-a-long-descriptive-name.pdf", make_pdf(FACT_PAGES), "application/pdf"),
                  ("broken-" + "x" * 80 + ".pdf", b"%PDF-1.4\n not really a pdf \n%%EOF", "application/pdf")]
        docs = svc.upload(files).json()["documents"]
        done = [svc.wait_done(d["id"])["status"] for d in docs]
        assert sorted(done) == ["failed"] + ["ready"] * 4, done
        yield svc
    finally:
        stop_service(svc)


def test_delete_buttons_stay_in_view_from_wide_screens_to_phones(documents_service, browser):
    from playwright.sync_api import expect

    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    for width, height in WIDTHS:
        page = browser.new_page(viewport={"width": width, "height": height})
        try:
            page.goto(documents_service.url + "/")
            rows = page.locator("#docs tbody tr")
            expect(rows).to_have_count(5, timeout=30_000)
            expect(page.locator("#docs .reason")).to_contain_text("PDF")  # the failure's reason is shown
            for path in LONG_PATHS:  # whole paths, not cut short
                expect(page.locator("#docs td.file", has_text=path)).to_have_count(1)
            # Nothing scrolls sideways: the page is no wider than the window.
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            buttons = page.locator("#docs button", has_text="Delete")
            assert buttons.count() == 5
            for i in range(5):
                button = buttons.nth(i)
                button.scroll_into_view_if_needed()
                box = button.bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, (width, i, box)
                # Not covered or clipped: the point at its centre is the button itself.
                hit = page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.textContent",
                                    [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
                assert hit == "Delete", (width, i, hit)
            if width in SCREENSHOTS:
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(artifacts / f"web-layout-{width}.png"), full_page=True)
        finally:
            page.close()
