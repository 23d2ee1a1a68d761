"""Downloads against a local HTTP server on 127.0.0.1: complete, interrupted then resumed,
corrupt, truncated and malicious archives; the hub pointed at nothing reachable; `models`."""

import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from icdedit import download
from icdedit.cli import app
from icdedit.download import DownloadError, fetch, model_status, unpack
from icdedit.specs import load_spec

runner = CliRunner()


def make_tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


class Server:
    """Serves `files` with Range support; `cut_first` drops the first response of a path halfway,
    `always_short` announces the full length but never sends it all."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_first: set[str] = set()
        self.always_short: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if self.path in server.cut_first:
                    server.cut_first.discard(self.path)
                    body = body[: len(body) // 2]
                elif self.path in server.always_short:
                    body = body[: max(len(body) - 10, 0)]
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh weights folder, and online (the loopback server is the only network used)."""
    monkeypatch.setenv("ICDEDIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "home"


TEACHER = b"teacher-weights" * 1000
FORWARD, REVERSE = b"forward" * 500, b"reverse" * 500


def model_yaml(tmp_path: Path, server: Server, tiny_spec) -> Path:
    data = {
        "name": "served",
        "base": str(Path(tiny_spec.base)),
        "teacher": "$ICDEDIT_HOME/t.pt",
        "forward_lora": "$ICDEDIT_HOME/f_19_259.safetensors",
        "reverse_lora": "$ICDEDIT_HOME/r_259_999.safetensors",
        "forward_timesteps": [19, 259],
        "reverse_timesteps": [259, 999],
        "sources": {
            "teacher": f"{server.url}/teacher.tar.gz",
            "loras": f"{server.url}/loras.tar.gz",
            "teacher_bytes": 3000,
            "loras_bytes": 500,
        },
    }
    path = tmp_path / "served.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- fetch ---------------------------------------------------------------------------------------------
def test_complete_download(server, tmp_path):
    server.files["/a.bin"] = b"x" * 3_000_000
    out = fetch(f"{server.url}/a.bin", tmp_path / "a.bin")
    assert out.read_bytes() == server.files["/a.bin"]
    assert not (tmp_path / "a.bin.part").exists()


def test_interrupted_download_resumes_with_range(server, tmp_path):
    server.files["/a.bin"] = bytes(range(256)) * 10_000
    server.cut_first.add("/a.bin")
    out = fetch(f"{server.url}/a.bin", tmp_path / "a.bin")
    assert out.read_bytes() == server.files["/a.bin"]
    assert server.requests[0][1] is None and server.requests[1][1] == f"bytes={len(server.files['/a.bin']) // 2}-"


def test_truncated_download_is_never_taken_as_complete(server, tmp_path):
    server.files["/a.bin"] = b"y" * 100_000
    server.always_short.add("/a.bin")
    with pytest.raises(DownloadError, match="interrupted") as info:
        fetch(f"{server.url}/a.bin", tmp_path / "a.bin", retries=1)
    assert "again to resume" in info.value.hint
    assert not (tmp_path / "a.bin").exists() and (tmp_path / "a.bin.part").exists()
    server.always_short.clear()  # the next run resumes and completes
    assert fetch(f"{server.url}/a.bin", tmp_path / "a.bin").read_bytes() == server.files["/a.bin"]


def test_wrong_hash_is_refused(server, tmp_path):
    server.files["/a.bin"] = b"z" * 1000
    with pytest.raises(DownloadError, match="sha256"):
        fetch(f"{server.url}/a.bin", tmp_path / "a.bin", sha256="0" * 64)
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "a.bin.part").exists()


def test_missing_address_is_a_clear_error(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        fetch(f"{server.url}/nothing", tmp_path / "n.bin")


# -- unpack -------------------------------------------------------------------------------------------
def test_unpack_takes_only_the_wanted_files(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tar({"release/f.safetensors": FORWARD, "release/r.safetensors": REVERSE, "README": b"hi"}))
    target = tmp_path / "home"
    unpack(archive, {"f.safetensors": target / "f.safetensors", "r.safetensors": target / "r.safetensors"})
    assert sorted(p.name for p in target.iterdir()) == ["f.safetensors", "r.safetensors"]
    assert (target / "f.safetensors").read_bytes() == FORWARD


@pytest.mark.parametrize(
    "members, links, message",
    [
        ({"../evil.pt": b"x", "t.pt": b"y"}, None, "outside the target"),
        ({"/etc/evil": b"x", "t.pt": b"y"}, None, "outside the target"),
        ({}, {"t.pt": "/etc/passwd"}, "is a link"),
    ],
)
def test_malicious_archives_are_refused(tmp_path, members, links, message):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tar(members, links))
    target = tmp_path / "home"
    with pytest.raises(DownloadError, match=message):
        unpack(archive, {"t.pt": target / "t.pt"})
    assert not (target / "t.pt").exists() and not (tmp_path / "evil.pt").exists()


def test_corrupt_archive_is_refused(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"\x1f\x8b" + b"garbage" * 100)
    with pytest.raises(DownloadError, match="corrupt"):
        unpack(archive, {"t.pt": tmp_path / "t.pt"})


def test_archive_without_the_expected_file_names_what_it_holds(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tar({"other.pt": b"x"}))
    with pytest.raises(DownloadError, match="has no t.pt.*other.pt"):
        unpack(archive, {"t.pt": tmp_path / "t.pt"})


# -- a whole model, through the CLI ----------------------------------------------------------------
def test_download_command_places_every_missing_file(server, tmp_path, home, tiny_spec):
    server.files["/teacher.tar.gz"] = make_tar({"sd/t.pt": TEACHER})
    server.files["/loras.tar.gz"] = make_tar({"f_19_259.safetensors": FORWARD, "r_259_999.safetensors": REVERSE})
    server.cut_first.add("/teacher.tar.gz")
    path = model_yaml(tmp_path, server, tiny_spec)
    before = {s.part: s.present for s in model_status(load_spec(path))}
    assert before == {"base": True, "teacher": False, "forward": False, "reverse": False}
    result = runner.invoke(app, ["download", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert (home / "t.pt").read_bytes() == TEACHER and (home / "r_259_999.safetensors").read_bytes() == REVERSE
    assert all(s.present for s in model_status(load_spec(path)))
    assert not list((home / ".downloads").iterdir())  # archives are removed once unpacked
    again = runner.invoke(app, ["download", str(path), "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["placed"] == []  # nothing left to fetch


def test_download_of_a_malicious_archive_writes_nothing(server, tmp_path, home, tiny_spec):
    server.files["/teacher.tar.gz"] = make_tar({"../../t.pt": TEACHER})
    server.files["/loras.tar.gz"] = make_tar({"f_19_259.safetensors": FORWARD, "r_259_999.safetensors": REVERSE})
    result = runner.invoke(app, ["download", str(model_yaml(tmp_path, server, tiny_spec))])
    assert result.exit_code == 1 and "outside the target" in result.stderr
    assert not (home / "t.pt").exists() and not (tmp_path / "t.pt").exists()


def test_missing_weights_error_names_the_fix(tmp_path, home, server, tiny_spec):
    from .helpers import make_photo

    path = model_yaml(tmp_path, server, tiny_spec)
    make_photo(64, 64).save(tmp_path / "p.png")
    result = runner.invoke(app, ["edit", str(tmp_path / "p.png"), "--src", "a cat", "--tgt", "a dog", "-m", str(path)])
    assert result.exit_code == 1
    assert "t.pt" in result.stderr and f"icdedit download {path}" in result.stderr


def test_hub_unreachable_is_a_clean_error(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = load_spec(_hub_yaml(tmp_path))
    with pytest.raises(DownloadError, match="could not be fetched"):
        download.download_base(spec)


def test_offline_hub_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        download.download_base(load_spec(_hub_yaml(tmp_path)))


def _hub_yaml(tmp_path):
    path = tmp_path / "hub.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": "nobody/nothing",
                "teacher": "t.pt",
                "forward_lora": "f.safetensors",
                "reverse_lora": "r.safetensors",
                "forward_timesteps": [19],
                "reverse_timesteps": [999],
            }
        )
    )
    return path


def test_models_command_shows_present_partial_and_absent(home):
    home.mkdir(parents=True)
    (home / "sd15_cfg_distill.pt").write_bytes(b"0" * 1234)  # the teacher is shared by all SD1.5 models
    (home / "iCD-SD15-forward_19_339_699.safetensors").write_bytes(b"0" * 10)
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    report = {m["model"]: m for m in listing if m["kind"] == "editing"}
    evaluation = {m["model"]: m for m in listing if m["kind"] == "evaluation"}
    assert set(evaluation) == {"dino-vitb8", "clip-vit-large-patch14", "dinov2-base", "lpips-squeeze"}
    assert evaluation["lpips-squeeze"]["download_command"] == "icdedit download lpips-squeeze"
    assert set(report) == {
        "sd15-4step-v1",
        "sd15-4step-v2",
        "sd15-3step",
        "sdxl-4step-v1",
        "sdxl-4step-v2",
        "sdxl-3step",
    }
    parts = {p["part"]: p for p in report["sd15-3step"]["parts"]}
    assert parts["teacher"]["present"] and parts["teacher"]["size_bytes"] == 1234
    assert parts["forward"]["present"] and not parts["reverse"]["present"]
    # the teacher is present; one missing LoRA still needs its whole archive, and the base is not cached
    assert (
        report["sd15-3step"]["download_bytes"] == report["sd15-4step-v1"]["download_bytes"] == 830_000_000 + 500_000_000
    )
    assert not report["sd15-3step"]["ready"]
    assert report["sd15-4step-v1"]["download_command"] == "icdedit download sd15-4step-v1"
    # SDXL: its own teacher (not present), LoRAs and a larger base (two text encoders)
    assert report["sdxl-4step-v2"]["download_bytes"] == 3_600_000_000 + 8_900_000_000 + 1_400_000_000
    text = runner.invoke(app, ["models"]).stdout
    assert "sd15-4step-v1" in text and "icdedit download sd15-4step-v1" in text


def test_edit_offers_to_download_and_then_runs(server, tmp_path, home, tiny_spec):
    """On a terminal, `edit` asks before fetching missing weights; yes -> download, then edit."""
    from icdedit.reporting import Reporter
    from icdedit.run_context import RunOptions
    from icdedit.workflow import EditRequest, run_edit

    from .helpers import make_photo

    server.files["/teacher.tar.gz"] = make_tar({"t.pt": tiny_spec.teacher.read_bytes()})
    server.files["/loras.tar.gz"] = make_tar(
        {
            "f_19_259.safetensors": tiny_spec.forward_lora.read_bytes(),
            "r_259_999.safetensors": tiny_spec.reverse_lora.read_bytes(),
        }
    )
    path = model_yaml(tmp_path, server, tiny_spec)
    make_photo(64, 64).save(tmp_path / "p.png")
    request = EditRequest(
        source=tmp_path / "p.png",
        targets=["a photo of a dog"],
        src="a photo of a cat",
        model=str(path),
        output=tmp_path / "out.png",
        run=RunOptions(device="cpu"),
    )
    questions = []
    with pytest.raises(Exception, match="not found"):  # declined: nothing is fetched
        run_edit(request, Reporter(confirm=lambda q: questions.append(q) or False))
    assert not (home / "t.pt").exists() and "Download" in questions[0]
    report = run_edit(request, Reporter(confirm=lambda q: True))
    assert report["outputs"] == [str(tmp_path / "out.png")] and (tmp_path / "out.png").is_file()
    assert (home / "t.pt").read_bytes() == tiny_spec.teacher.read_bytes()


def test_unreachable_release_server_is_a_clean_error(tmp_path):
    with pytest.raises(DownloadError, match="cannot reach 127.0.0.1:9") as info:
        fetch("http://127.0.0.1:9/teacher.tar.gz", tmp_path / "t.tar.gz", retries=1)
    assert "network" in info.value.hint and not list(tmp_path.iterdir())  # no empty .part left behind


def test_offline_download_names_the_missing_files(monkeypatch, tmp_path, home, server, tiny_spec):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["download", str(model_yaml(tmp_path, server, tiny_spec))])
    assert result.exit_code == 1 and "HF_HUB_OFFLINE" in result.stderr
    assert str(home / "t.pt") in result.stderr and "icdedit download" in result.stderr
    assert server.requests == []  # nothing was even tried
