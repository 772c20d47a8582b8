"""The web console in a real browser (Debian's chromium, driven by Playwright) against a real
`faceid serve` with an API key: enrol, identify with the boxes drawn where the faces are
(EXIF-rotated photo included), choose a face among comparable ones, browse and delete."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from playwright import sync_api

from app.main import create_app
from core.faces.pipeline import FacePipeline
from tests.conftest import GROUP, KEY, jpeg, settings
from tests.test_server_process import Server

CHROMIUM = Path("/usr/bin/chromium")  # .ci/run installs it; Playwright's own download is not used
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium; .ci/run does)")


def test_the_console_is_served_open_from_the_package_and_loads_nothing_from_elsewhere(tmp_path):
    with TestClient(create_app(settings(tmp_path, api_key=KEY))) as client:
        assert client.get("/", follow_redirects=False).headers["location"] == "/console"
        page = client.get("/console")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
        for name in ("console.js", "console.css"):
            body = client.get(f"/console/{name}").text
            assert "http://" not in body and "https://" not in body and "//cdn" not in body
        assert client.get("/console/secrets.txt").status_code == 404
        assert client.get("/persons").status_code == 401  # the page is open; the API behind it is not


@pytest.fixture()
def server(tmp_path):
    s = Server(tmp_path / "gallery", FACEID_API_KEY=KEY).start()
    yield s
    s.stop()


@pytest.fixture()
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(f"{server.base}/")
        yield page
        browser.close()


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def rotated_with_exif(img: Image.Image) -> bytes:
    """A JPEG whose pixels are `img` turned 90° clockwise, tagged so that viewers turn it back."""
    exif = Image.Exif()
    exif[0x0112] = 8  # orientation: turn 90° counter-clockwise to view
    buf = io.BytesIO()
    img.transpose(Image.Transpose.ROTATE_270).save(buf, format="JPEG", quality=92, exif=exif)
    return buf.getvalue()


def drawn_boxes(page, container: str) -> list[tuple[float, float, float, float]]:
    """The boxes drawn over `container`'s photo, in the photo's own (upright) pixels."""
    return page.eval_on_selector(container, """c => { const img = c.querySelector('img'); const r = img.getBoundingClientRect();
        const s = img.naturalWidth / r.width; return [...c.querySelectorAll('.box')].map(b => { const q = b.getBoundingClientRect();
        return [(q.left - r.left) * s, (q.top - r.top) * s, (q.right - r.left) * s, (q.bottom - r.top) * s]; }); }""")


@needs_chromium
def test_enrol_identify_browse_and_delete_in_a_browser(page, server, tmp_path, group_faces, pipeline: FacePipeline):
    assert page.url.endswith("/console")
    # Enrol: the first API call gets 401, the page asks for the key once and keeps it in sessionStorage.
    page.click("nav button[data-tab=enroll]")
    page.fill("#person-id", "ada")
    page.fill("#person-name", "Ada Lovelace")
    page.set_input_files("#enroll-files", write(tmp_path / "ada.jpg", jpeg(group_faces[0])))
    page.click("#enroll-form button[type=submit]")
    page.wait_for_selector("#key-form:not([hidden])")
    page.fill("#key", KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#enroll-result .box")
    assert "1 face(s) added" in page.inner_text("#enroll-result")
    assert page.evaluate("() => sessionStorage.getItem('faceid-api-key')") == KEY
    assert page.context.cookies() == [] and KEY not in page.url

    # Identify the whole group photo, EXIF-rotated: six boxes where the faces are, Ada named.
    group = Image.open(GROUP).convert("RGB")
    truth = sorted(f.box for f in pipeline.detect_all(group))
    page.click("nav button[data-tab=identify]")
    page.set_input_files("#identify-file", write(tmp_path / "group.jpg", rotated_with_exif(group)))
    page.wait_for_selector("#identify-photo .box")
    drawn = sorted(drawn_boxes(page, "#identify-photo"))
    assert len(drawn) == len(truth) == 6
    for d, t in zip(drawn, truth):
        assert max(abs(a - b) for a, b in zip(d, t)) < 0.08 * (t[2] - t[0]), (d, t)
    labels = page.locator("#identify-photo .box .label").all_inner_texts()
    assert sum(label.startswith("Ada Lovelace") for label in labels) == 1 and labels.count("unknown") == 5
    page.locator("#identify-photo .box.named").click()
    assert "ada" in page.inner_text("#identify-details") and "reasons" in page.inner_text("#identify-details")

    # A threshold no face reaches, answered again: nobody is named.
    page.fill("#threshold", "0.999")
    page.click("#again")
    page.wait_for_function("() => document.querySelectorAll('#identify-photo .box.named').length === 0 && "
                           "document.querySelectorAll('#identify-photo .box').length === 6")

    # Not a photo: the API's message beside it.
    page.set_input_files("#identify-file", write(tmp_path / "notes.jpg", b"not an image at all"))
    page.wait_for_function("() => document.getElementById('identify-error').textContent.length > 0")
    assert page.inner_text("#identify-error").startswith(("400", "415"))

    # Comparable faces: the page offers them, the one clicked is enrolled.
    page.click("nav button[data-tab=enroll]")
    page.fill("#person-id", "crowd")
    page.fill("#person-name", "")
    page.evaluate("() => { enrollFiles = []; listEnrollFiles(); }")
    page.set_input_files("#enroll-files", write(tmp_path / "crowd.jpg", jpeg(group)))
    page.click("#enroll-form button[type=submit]")
    page.wait_for_selector("#enroll-result .box.choice")
    assert page.inner_text("#enroll-error").startswith("422")
    choices = page.locator("#enroll-result .box.choice")
    assert choices.count() == 6
    chosen = [float(v) for v in choices.nth(3).get_attribute("data-box").split(",")]
    choices.nth(3).click()
    page.click("#enroll-form button[type=submit]")
    page.wait_for_selector("#enroll-result .box.named")
    person = httpx.get(f"{server.base}/persons/crowd/faces", headers={"X-API-Key": KEY}).json()
    assert person["total"] == 1
    enrolled = drawn_boxes(page, "#enroll-result .photo")[0]
    assert max(abs(a - b) for a, b in zip(enrolled, chosen)) < 0.08 * (chosen[2] - chosen[0])

    # Gallery: both persons with their crops; a filter; delete after confirming.
    page.click("nav button[data-tab=gallery]")
    page.wait_for_selector("#persons li img")
    assert page.locator("#persons li").count() == 2
    page.wait_for_function("() => [...document.querySelectorAll('#persons img')].every(i => i.complete && i.naturalWidth === 160)")
    page.fill("#filter", "lovelace")
    page.dispatch_event("#filter", "change")
    page.wait_for_function("() => document.querySelectorAll('#persons li').length === 1")
    assert "ada" in page.inner_text("#persons")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#persons li button")
    page.wait_for_function("() => document.getElementById('page').textContent === 'nobody enrolled'")
    assert httpx.get(f"{server.base}/persons/ada", headers={"X-API-Key": KEY}).status_code == 404
    assert httpx.get(f"{server.base}/persons/crowd", headers={"X-API-Key": KEY}).status_code == 200
