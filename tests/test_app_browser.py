"""The app in a real browser: headless Chromium loads the page, an image is uploaded, Inspect is
clicked, and the result image appears. Screenshot: test-artifacts/app.png."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def app_url(trained_checkpoint):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        from ulsad.app import ui

        demo = ui.build_demo(
            choices=[("synthetic", str(trained_checkpoint))], default=str(trained_checkpoint)
        )
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        demo.launch(
            prevent_thread_lock=True,
            server_name="127.0.0.1",
            server_port=port,
            quiet=True,
            **ui.LAUNCH_KWARGS,
        )
        yield demo.local_url
        demo.close()


def test_upload_and_inspect_shows_the_result_image(app_url, synthetic_root):
    image = sorted((synthetic_root / "synthetic" / "test" / "scratch").glob("*.png"))[0]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(app_url, wait_until="domcontentloaded")
            page.locator("#input-image input[type=file]").set_input_files(str(image))
            page.get_by_role("button", name="Inspect", exact=True).click()
            result = page.locator("#overlay img")
            result.wait_for(state="visible", timeout=60_000)
            expect = sync_api.expect
            verdict = page.locator(".verdict textarea")
            expect(verdict).to_have_value(re.compile(r"^(GOOD|ANOMALOUS): score"), timeout=30_000)
            expect(page.locator("#heatmap .js-plotly-plot")).to_be_visible(timeout=30_000)
            # Upload and click each run Inspect: wait until the status overlay is hidden again.
            status = page.locator("#overlay .wrap").first
            expect(status).to_have_class(re.compile(r"\bhide\b"), timeout=30_000)
            # Visible is not yet decoded: on a loaded machine naturalWidth read 0 here.
            page.wait_for_function(
                "() => { const img = document.querySelector('#overlay img');"
                " return img !== null && img.complete && img.naturalWidth > 0; }",
                timeout=30_000,
            )
            page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
            src = result.get_attribute("src")
            natural_width = result.evaluate("img => img.naturalWidth")
        finally:
            browser.close()
    assert src and ("/file=" in src or "/gradio_api/" in src)
    assert natural_width == Image.open(image).width  # the overlay keeps the upload's size
    assert (ARTIFACTS / "app.png").stat().st_size > 10_000
