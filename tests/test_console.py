"""The web console in a real browser (Debian's chromium, driven by Playwright) against a real
`faceid serve` with an API key: the key asked once, enrol, identify with the boxes drawn where the
faces are (EXIF-rotated photo included), choose a face among comparable ones, markup shown as
text, browse and delete. Each test leaves screenshots in its tmp_path; docs/' two come from
`pytest tests/test_console.py --basetemp=/tmp/console` (identify.png, gallery.png)."""

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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("console") / "gallery", FACEID_API_KEY=KEY).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install chromium; .ci/run does)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


class Console:
    """One fresh browser tab (its own sessionStorage) on the console, with what its scripts did."""

    def __init__(self, browser, server: Server, out: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.out = out
        self.alerts: list[str] = []
        self.page.on("dialog", self._dialog)
        self.response = self.page.goto(f"{server.base}/")

    def _dialog(self, dialog) -> None:
        if dialog.type == "confirm":
            dialog.accept()
        else:  # an alert() can only come from a script that should not run
            self.alerts.append(dialog.message)
            dialog.dismiss()

    def unlock(self, key: str = KEY) -> None:
        self.page.wait_for_selector("#key-form:not([hidden])")
        self.page.fill("#key", key)
        self.page.click("#key-form button[type=submit]")

    def tab(self, name: str) -> None:
        self.page.click(f"nav button[data-tab={name}]")

    def enrol(self, person_id: str, name: str, photo: Path) -> None:
        self.tab("enroll")
        self.page.evaluate("() => { enrollFiles = []; listEnrollFiles(); }")
        self.page.fill("#person-id", person_id)
        self.page.fill("#person-name", name)
        self.page.set_input_files("#enroll-files", str(photo))
        self.page.click("#enroll-form button[type=submit]")

    def identify(self, photo: Path) -> None:
        self.tab("identify")
        self.page.set_input_files("#identify-file", str(photo))

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.out / f"{name}.png"), full_page=True)


@pytest.fixture()
def console(browser, server, tmp_path, request):
    c = Console(browser, server, tmp_path)
    yield c
    c.shot(request.node.name)
    assert c.alerts == [], f"a script ran: {c.alerts}"
    c.context.close()


@pytest.fixture()
def ready(console):
    """A console that has been given the key."""
    console.unlock()
    console.page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Ready')")
    return console


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


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


def near(a, b) -> bool:
    return max(abs(p - q) for p, q in zip(a, b)) < 0.08 * (b[2] - b[0])


def api(server: Server, path: str) -> httpx.Response:
    return httpx.get(f"{server.base}{path}", headers={"X-API-Key": KEY})


@needs_chromium
def test_without_the_key_nothing_loads_and_with_it_everything_does(console, server):
    page = console.page
    assert page.url.endswith("/console")
    policy = console.response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    console.tab("gallery")
    page.wait_for_selector("#key-form:not([hidden])")
    assert page.inner_text("#status") == "" and page.locator("#persons li").count() == 0
    console.unlock("not-the-key")  # refused: asked again, still nothing shown
    page.wait_for_selector("#key-form:not([hidden])")
    assert page.inner_text("#status") == "" and page.locator("#persons li").count() == 0
    assert page.evaluate("() => sessionStorage.getItem('faceid-api-key')") is None
    console.unlock()
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Ready')")
    status = page.inner_text("#status")
    ready = api(server, "/readyz").json()
    assert ready["model_id"] in status and f"threshold {ready['threshold']:.3f}" in status and "writable" in status
    page.wait_for_function("() => document.getElementById('page').textContent !== ''")
    assert page.evaluate("() => sessionStorage.getItem('faceid-api-key')") == KEY
    assert console.context.cookies() == [] and KEY not in page.url


@needs_chromium
def test_enrol_two_then_identify_both_in_an_exif_rotated_photo(ready, server, tmp_path, group_faces, pipeline: FacePipeline):
    page = ready.page
    for person_id, name, face in (("ada", "Ada Lovelace", 0), ("bob", "Bob Kahn", 5)):
        ready.enrol(person_id, name, write(tmp_path / f"{person_id}.jpg", jpeg(group_faces[face])))
        page.wait_for_selector("#enroll-result .box")
        assert f"{person_id}: 1 face(s) added" in page.inner_text("#enroll-result")
        assert "second, different photo" in page.inner_text("#enroll-result .advice")

    group = Image.open(GROUP).convert("RGB")
    truth = sorted(f.box for f in pipeline.detect_all(group))  # left to right, as group_faces
    ready.identify(write(tmp_path / "group.jpg", rotated_with_exif(group)))
    page.wait_for_selector("#identify-photo .box")
    drawn = page.locator("#identify-photo .box")
    boxes = drawn_boxes(page, "#identify-photo")
    labels = drawn.locator(".label").all_inner_texts()
    assert len(boxes) == len(truth) == 6
    by_x = sorted(zip(boxes, labels))
    for (box, _), t in zip(by_x, truth):
        assert near(box, t), (box, t)
    assert by_x[0][1].startswith("Ada Lovelace") and by_x[5][1].startswith("Bob Kahn")
    assert by_x[2][1] == "unknown"  # nobody enrols the middle person
    ready.shot("identify")
    page.locator("#identify-photo .box.named").first.click()
    details = page.inner_text("#identify-details")
    assert "reasons" in details and "Face candidates" in details

    page.fill("#threshold", "0.999")  # no face reaches it: answered again, nobody is named
    page.click("#again")
    page.wait_for_function("() => document.querySelectorAll('#identify-photo .box.named').length === 0 && "
                           "document.querySelectorAll('#identify-photo .box').length === 6")

    ready.identify(write(tmp_path / "notes.jpg", b"not an image at all"))  # the API's message beside it
    page.wait_for_function("() => document.getElementById('identify-error').textContent.length > 0")
    assert page.inner_text("#identify-error").startswith(("400", "415"))


@needs_chromium
def test_a_stranger_is_unknown(ready, tmp_path, group_faces):
    ready.identify(write(tmp_path / "stranger.jpg", jpeg(group_faces[2])))
    ready.page.wait_for_selector("#identify-photo .box")
    assert ready.page.locator("#identify-photo .box .label").all_inner_texts() == ["unknown"]
    assert "unknown" in ready.page.inner_text("#identify-details h3")


@needs_chromium
def test_the_face_clicked_among_comparable_ones_is_enrolled(ready, server, tmp_path):
    page = ready.page
    group = Image.open(GROUP).convert("RGB")
    ready.enrol("crowd", "", write(tmp_path / "crowd.jpg", jpeg(group)))
    page.wait_for_selector("#enroll-result .box.choice")
    assert page.inner_text("#enroll-error").startswith("422")
    choices = page.locator("#enroll-result .box.choice")
    assert choices.count() == 6
    offered = [[float(v) for v in choices.nth(i).get_attribute("data-box").split(",")] for i in range(6)]
    second = sorted(range(6), key=lambda i: offered[i][0])[1]  # the second face from the left
    choices.nth(second).click()
    page.click("#enroll-form button[type=submit]")
    page.wait_for_selector("#enroll-result .box.named")
    assert api(server, "/persons/crowd/faces").json()["total"] == 1
    assert near(drawn_boxes(page, "#enroll-result .photo")[0], offered[second])


@needs_chromium
def test_a_name_with_markup_is_shown_as_text(ready, tmp_path, group_faces):
    page = ready.page
    name = "<img src=x onerror=alert(1)>"
    ready.enrol("mallory", name, write(tmp_path / "mallory.jpg", jpeg(group_faces[3])))
    page.wait_for_selector("#enroll-result .box.named")
    ready.identify(write(tmp_path / "again.jpg", jpeg(group_faces[3])))
    page.wait_for_selector("#identify-photo .box.named")
    assert page.inner_text("#identify-photo .label").startswith(name)
    ready.tab("gallery")
    page.fill("#filter", "mallory")
    page.dispatch_event("#filter", "change")
    page.wait_for_function("() => document.querySelectorAll('#persons li').length === 1")
    assert name in page.inner_text("#persons li strong")
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"], .label img, #persons strong img').length") == 0
    # no alert ran: the console fixture fails the test if one did


@needs_chromium
def test_browse_filter_and_delete_after_confirming(ready, server, tmp_path, group_faces):
    page = ready.page
    for person_id, name, face in (("grace", "Grace Hopper", 1), ("linus", "", 4)):
        ready.enrol(person_id, name, write(tmp_path / f"{person_id}.jpg", jpeg(group_faces[face])))
        page.wait_for_selector("#enroll-result .box.named")
    ready.tab("gallery")
    page.wait_for_selector("#persons li img")
    total = api(server, "/persons").json()["total"]
    assert page.locator("#persons li").count() == total >= 2
    page.wait_for_function("() => [...document.querySelectorAll('#persons img')].every(i => i.complete && i.naturalWidth === 160)")
    ready.shot("gallery")
    page.fill("#filter", "hopper")
    page.dispatch_event("#filter", "change")
    page.wait_for_function("() => document.querySelectorAll('#persons li').length === 1")
    assert "grace" in page.inner_text("#persons")
    page.click("#persons li button")  # confirm() is accepted by the console fixture
    page.wait_for_function("() => document.getElementById('page').textContent === 'nobody enrolled'")
    assert api(server, "/persons/grace").status_code == 404
    assert api(server, "/persons/linus").status_code == 200
    page.wait_for_function(f"() => document.getElementById('status').textContent.includes('{total - 1} person(s)')")


@needs_chromium
def test_the_console_works_in_one_collection_at_a_time(ready, server, tmp_path, group_faces):
    page = ready.page
    headers = {"X-API-Key": KEY}
    assert httpx.post(f"{server.base}/collections", json={"name": "team"}, headers=headers).status_code == 201
    r = httpx.post(f"{server.base}/enroll", data={"person_id": "teammate"}, headers=headers | {"X-Collection": "team"},
                   files=[("images", ("t.jpg", jpeg(group_faces[2]), "image/jpeg"))], timeout=60)
    assert r.status_code == 200, r.text
    page.reload()  # the tab keeps its key; the list of collections is read again
    page.wait_for_function("() => [...document.querySelectorAll('#collection option')].map(o => o.value).includes('team')")
    page.select_option("#collection", "team")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('collection team')")
    assert "1 person(s)" in page.inner_text("#status")
    ready.tab("gallery")
    page.wait_for_function("() => document.querySelectorAll('#persons li').length === 1")
    assert "teammate" in page.inner_text("#persons")
    ready.identify(write(tmp_path / "mate.jpg", jpeg(group_faces[2])))
    page.wait_for_selector("#identify-photo .box.named")
    assert page.inner_text("#identify-photo .label").startswith("teammate")
    page.select_option("#collection", "default")  # the photo is answered again, in the default collection
    page.wait_for_function("() => document.getElementById('status').textContent.includes('collection default')")
    page.wait_for_function("() => [...document.querySelectorAll('#identify-photo .label')].every(l => !l.textContent.startsWith('teammate'))")
    assert page.evaluate("() => sessionStorage.getItem('faceid-collection')") == "default"


@needs_chromium
def test_unknown_faces_are_shown_in_groups_and_one_enrolled(browser, tmp_path_factory, tmp_path, group_faces):
    server = Server(tmp_path_factory.mktemp("unknowns") / "gallery", FACEID_API_KEY=KEY, FACEID_UNKNOWNS="true").start()
    console = None
    try:
        for photo in (group_faces[3], group_faces[3].transpose(Image.Transpose.FLIP_LEFT_RIGHT)):
            r = httpx.post(f"{server.base}/identify", files={"image": ("q.jpg", jpeg(photo), "image/jpeg")}, headers={"X-API-Key": KEY}, timeout=60)
            assert r.status_code == 200 and r.json()["faces"][0]["match"] is None
        console = Console(browser, server, tmp_path)
        console.unlock()
        page = console.page
        console.tab("unknowns")
        page.wait_for_function("() => [...document.querySelectorAll('#clusters li img')].filter(i => i.naturalWidth === 160).length === 2")
        assert page.inner_text("#clusters li strong").startswith("2 face(s)")
        console.shot("unknowns")
        page.fill("#clusters li input[placeholder='person id']", "stranger")
        page.click("#clusters li button[type=submit]")
        page.wait_for_function("() => document.getElementById('unknowns-error').textContent === 'no unknown faces kept'")
        assert api(server, "/persons/stranger").json()["n_faces"] == 2
        assert console.alerts == []
    finally:
        if console is not None:
            console.context.close()
        server.stop()
