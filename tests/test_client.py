"""faceid.client and the `faceid identify` / `faceid verify` commands, against a real `faceid
serve` with an API key; the retry on 503 against a stand-in transport."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from faceid.cli import main
from faceid.client import FaceIdClient, FaceIdError
from tests.conftest import KEY, jpeg
from tests.test_server_process import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("client") / "gallery", FACEID_API_KEY=KEY).start()
    yield s
    s.stop()


@pytest.fixture()
def faceid(server):
    with FaceIdClient(server.base, key=KEY) as client:
        yield client


def test_every_route_through_the_client(faceid, group_faces, tmp_path):
    enrolled = faceid.enroll("ada", [jpeg(group_faces[0]), io.BytesIO(jpeg(group_faces[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT)))],
                             name="Ada")
    assert enrolled.person.n_faces == 2 and enrolled.created
    (face,) = faceid.identify(jpeg(group_faces[0])).faces
    assert face.match is not None and face.match.person_id == "ada" and face.match.name == "Ada"
    assert faceid.verify(jpeg(group_faces[0]), person_id="ada").same
    assert not faceid.verify(jpeg(group_faces[0]), jpeg(group_faces[4])).same
    assert len(faceid.detect(jpeg(group_faces[2]), crops=True).faces[0].crop or "") > 100
    assert faceid.persons().total == 1 and faceid.person("ada").n_faces == 2
    first = faceid.faces("ada").items[0]
    assert Image.open(io.BytesIO(faceid.crop("ada", first.face_id))).size == (160, 160)
    vector = [1.0] + [0.0] * 511
    assert faceid.identify_embedding(vector).model_id == faceid.readyz().model_id
    with pytest.raises(FaceIdError) as refused:
        faceid.person("nobody")
    assert refused.value.status == 404 and "nobody" in str(refused.value.detail)

    team = faceid.collection("team")
    assert faceid.create_collection("team", threshold=0.5).threshold == 0.5
    backup = faceid.export(tmp_path / "backup.jsonl.gz", crops=True)
    assert team.import_file(backup).faces == 2
    assert team.identify(jpeg(group_faces[0])).faces[0].match.person_id == "ada"
    assert [c.name for c in faceid.collections()] == ["default", "team"] and team.describe_collection("team").faces == 2
    faceid.delete_person("ada")
    assert faceid.persons().total == 0 and team.persons().total == 1  # the other collection keeps its own
    faceid.delete_collection("team")
    team.close()
    assert faceid.healthz() and faceid.readyz().ready


def test_the_commands_ask_a_running_service(server, group_faces, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FACEID_API_KEY", KEY)
    with FaceIdClient(server.base, key=KEY) as client:
        client.enroll("bob", [jpeg(group_faces[5])])
    photo, other = tmp_path / "bob.jpg", tmp_path / "other.jpg"
    photo.write_bytes(jpeg(group_faces[5]))
    other.write_bytes(jpeg(group_faces[1]))
    assert main(["identify", str(photo), "--url", server.base]) == 0
    assert "bob (" in capsys.readouterr().out
    assert main(["verify", str(photo), "--person", "bob", "--url", server.base]) == 0
    assert capsys.readouterr().out.startswith("same")
    assert main(["verify", str(photo), str(other), "--url", server.base]) == 1
    assert capsys.readouterr().out.startswith("different")
    assert main(["identify", str(photo), "--url", server.base, "--key", "w" * 20]) == 2
    assert "401" in capsys.readouterr().err
    assert main(["identify", str(photo), "--url", "http://127.0.0.1:9"]) == 2  # nobody listening: one line, no traceback
    assert "error" in capsys.readouterr().err
    assert KEY not in server.output() and "w" * 20 not in server.output()  # keys, right or wrong, are never logged


def test_a_503_with_retry_after_is_asked_again():
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) < 3:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "busy"})
        return httpx.Response(200, json={"status": "ok"})

    with FaceIdClient("http://faceid.test", transport=httpx.MockTransport(answer)) as client:
        assert client.healthz() and calls == ["/healthz"] * 3
    calls.clear()
    with FaceIdClient("http://faceid.test", retries=1, transport=httpx.MockTransport(answer)) as client, pytest.raises(FaceIdError) as err:
        client.healthz()
    assert err.value.status == 503 and len(calls) == 2
