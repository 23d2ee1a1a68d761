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
    listing = json.loads(result.stdout)["models"]
    report = {m["model"]: m for m in listing if m["kind"] == "editing" and not m.get("random_weights")}
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


# -- the first command fetches what is missing (as from_pretrained does) ----------------------------
def serve_tiny_weights(server: Server, tiny_spec) -> None:
    """The release archives of a model whose teacher and LoRAs are the tiny model's own."""
    server.files["/teacher.tar.gz"] = make_tar({"t.pt": tiny_spec.teacher.read_bytes()})
    server.files["/loras.tar.gz"] = make_tar(
        {
            "f_19_259.safetensors": tiny_spec.forward_lora.read_bytes(),
            "r_259_999.safetensors": tiny_spec.reverse_lora.read_bytes(),
        }
    )


def command_line(command: str, path: Path, tmp_path: Path) -> list[str]:
    from .helpers import edit_args, generate_args, invert_args, make_photo

    make_photo(64, 64).save(tmp_path / "p.png")
    return {
        "edit": lambda: edit_args(tmp_path / "p.png", "a cat", "a dog", tmp_path / "out.png", model=path),
        "invert": lambda: invert_args(tmp_path / "p.png", "a cat", tmp_path / "out.safetensors", model=path),
        "generate": lambda: generate_args("a cat", model=path, extra=["-o", tmp_path / "out.png"]),
    }[command]()


@pytest.mark.parametrize("command", ["edit", "invert", "generate"])
def test_a_command_without_weights_fetches_them_and_runs(server, tmp_path, home, tiny_spec, command):
    serve_tiny_weights(server, tiny_spec)
    path = model_yaml(tmp_path, server, tiny_spec)
    result = runner.invoke(app, command_line(command, path, tmp_path))
    assert result.exit_code == 0, result.output
    assert list(tmp_path.glob("out.*")), "the command wrote its output"
    assert (home / "t.pt").read_bytes() == tiny_spec.teacher.read_bytes()
    assert (home / "r_259_999.safetensors").read_bytes() == tiny_spec.reverse_lora.read_bytes()
    # what is fetched, how much and from where, before it is fetched; nothing asked
    assert "fetching what model 'served' needs (about 3.5 kB):" in result.stderr
    assert f"teacher {home / 't.pt'} (3.0 kB) from {server.url}/teacher.tar.gz" in result.stderr
    assert f"forward LoRA {home / 'f_19_259.safetensors'}, reverse LoRA" in result.stderr
    assert "fetched 3 file(s) for model 'served'" in result.stderr
    fetched = list(server.requests)
    again = runner.invoke(app, [*command_line(command, path, tmp_path), "--overwrite"])
    assert again.exit_code == 0, again.output
    assert "fetching" not in again.stderr and server.requests == fetched  # on disk now: nothing fetched


@pytest.mark.parametrize("how", ["--offline", "HF_HUB_OFFLINE=1"])
def test_offline_refuses_naming_every_missing_file(server, tmp_path, home, tiny_spec, monkeypatch, how):

    serve_tiny_weights(server, tiny_spec)
    path = model_yaml(tmp_path, server, tiny_spec)
    (home / "f_19_259.safetensors").parent.mkdir(parents=True)
    (home / "f_19_259.safetensors").write_bytes(tiny_spec.forward_lora.read_bytes())  # one of three is there
    args = command_line("edit", path, tmp_path)
    if how == "--offline":
        args.append("--offline")
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    variable = "--offline" if how == "--offline" else "HF_HUB_OFFLINE"
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr  # one line (edit's own notes on the prompts come before it)
    assert (
        f"weights of model 'served' not found: teacher {home / 't.pt'}, reverse LoRA {home / 'r_259_999.safetensors'}"
        f" (hint: {variable} is set: run `icdedit download {path}` (about 3.5 kB from {server.url}/teacher.tar.gz"
    ) in errors[0]
    assert "forward LoRA" not in errors[0]  # only what is missing
    assert server.requests == [] and not (tmp_path / "out.png").exists()


def test_every_missing_file_is_named_base_files_included(server, tmp_path, home, tiny_spec):
    """A local base folder that lacks its VAE cannot be fetched: the one line names the VAE's
    files as well as the teacher and both LoRAs, and says what to do with each."""
    import shutil

    from icdedit.loader import MissingWeightsError, load_model

    base = tmp_path / "base"
    shutil.copytree(tiny_spec.base, base)
    shutil.rmtree(base / "vae")
    data = yaml.safe_load(model_yaml(tmp_path, server, tiny_spec).read_text())
    (tmp_path / "served.yaml").write_text(yaml.safe_dump({**data, "base": str(base)}))
    with pytest.raises(MissingWeightsError) as info:
        load_model(load_spec(tmp_path / "served.yaml"), device="cpu")
    message = info.value.message
    for fragment in ("teacher", "forward LoRA", "reverse LoRA", f"VAE config {base / 'vae' / 'config.json'}"):
        assert fragment in message, message
    assert f"VAE {base / 'vae' / 'diffusion_pytorch_model.safetensors'}" in message
    assert str(base / "vae") in info.value.hint and "icdedit download" in info.value.hint
    assert server.requests == []  # nothing fetched while something cannot be


def test_a_missing_preview_decoder_is_fetched_with_the_model(tmp_path, home, tiny_model, monkeypatch):
    import huggingface_hub

    from icdedit.preview import PREVIEW_DECODERS
    from icdedit.tiny import build_tiny_preview_decoder

    asked = []

    def fake_snapshot(repo_id, allow_patterns, local_dir, **_):  # the hub, as far as this download sees it
        asked.append(repo_id)
        build_tiny_preview_decoder(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    result = runner.invoke(app, [*command_line("edit", tiny_model, tmp_path), "--preview"])
    assert result.exit_code == 0, result.output
    assert asked == ["madebyollin/taesd"] and PREVIEW_DECODERS["taesd"].present
    assert f"preview decoder 'taesd' {PREVIEW_DECODERS['taesd'].folder} (10.0 MB)" in result.stderr


# -- listings ---------------------------------------------------------------------------------------
def test_models_lists_the_tiny_models_without_building_them(home):
    listing = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    assert listing["command"] == "models"
    tiny = {m["model"]: m for m in listing["models"] if m.get("random_weights")}
    assert set(tiny) == {"tiny", "tiny-xl"} and tiny["tiny-xl"]["family"] == "sdxl"
    assert all(m["ready"] and m["kind"] == "editing" and m["download_bytes"] == 0 for m in tiny.values())
    assert tiny["tiny"]["parts"][0]["location"] == str(home / "tiny") and not tiny["tiny"]["parts"][0]["present"]
    assert not (home / "tiny").exists()  # listed, not built
    text = runner.invoke(app, ["models"]).stdout
    assert "built on first use" in text and "tiny-xl" in text


@pytest.mark.parametrize(
    "name, suggestion", [("tinyy", "did you mean 'tiny'?"), ("taesx", "did you mean 'taesd"), ("nothing", "")]
)
def test_download_of_an_unknown_name_lists_every_name_it_takes(home, name, suggestion):
    from .helpers import assert_clean_error

    result = runner.invoke(app, ["download", name])
    every = ["sd15-4step-v1", "sdxl-3step", "tiny-xl", "dinov2-base", "lpips-squeeze", "taesd", "taesdxl", ".yaml"]
    assert_clean_error(result, f"unknown model {name!r}", suggestion, *every, code=2, hint=True)
    assert ("did you mean" in result.stderr) == bool(suggestion)


def test_presets_show_their_method():
    result = runner.invoke(app, ["presets"])
    header = next(line for line in result.stdout.splitlines() if line.startswith("preset"))
    assert "method" in header.split() and "model's" in result.stdout
    assert "the model's own edit method (p2p for SD1.5, switch for SDXL)" in result.stdout
    assert json.loads(runner.invoke(app, ["presets", "--json"]).stdout)["presets"]["default"]["method"] is None


def test_the_catalog_modules_import_no_torch():
    """`icdedit models` and `download` answer without torch: their modules import none of it."""
    import subprocess
    import sys

    code = "import sys, icdedit.catalog, icdedit.download, icdedit.eval_models, icdedit.preview, icdedit.weights; "
    code += "print(sorted("
    code += "m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_an_evaluation_model_is_fetched_on_first_use_unless_offline(server, home, monkeypatch):
    import hashlib

    from icdedit.errors import ModelError
    from icdedit.eval_models import EvalModel
    from icdedit.reporting import Reporter

    data = b"weights" * 100
    name = f"/net-{hashlib.sha256(data).hexdigest()[:8]}.pth"  # torchvision's naming: a sha256 prefix
    server.files[name] = data
    model = EvalModel("net", "a test network", len(data), url=server.url + name)
    with pytest.raises(ModelError, match="--offline is set: run `icdedit download net`"):
        model.ensure(offline_flag=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set: run `icdedit download net`"):
        model.ensure()
    assert server.requests == [] and not model.present
    monkeypatch.delenv("HF_HUB_OFFLINE")
    notes = []
    assert model.ensure(Reporter(note=notes.append)) == model.folder and model.checkpoint.read_bytes() == data
    assert len(notes) == 1 and notes[0].startswith("fetching evaluation model 'net'")
    assert f"(about 700 bytes) from {server.url}{name}" in notes[0]
    assert model.ensure() == model.folder and len(server.requests) == 1  # on disk: not fetched again


def test_download_progress_counts_in_megabytes_or_kilobytes():
    seen = []
    update = download.in_units(lambda name, done, total: seen.append((name, done, total)))
    update("t.pt", 120_500_000, 830_000_000)
    update("small.bin", 2_500, 3_000)
    update("unknown.bin", 5_000_000, None)
    assert seen == [("t.pt (MB)", 120, 830), ("small.bin (kB)", 2, 3), ("unknown.bin (MB)", 5, None)]
    assert download.in_units(None) is None


def test_batch_with_offline_names_every_missing_file_and_runs_nothing(server, tmp_path, home, tiny_spec):
    from .helpers import batch_args, make_photo

    path = model_yaml(tmp_path, server, tiny_spec)
    make_photo(64, 64).save(tmp_path / "p.png")
    args = batch_args([tmp_path / "p.png"], tmp_path / "out", model=path, extra=["--src", "a cat", "--tgt", "a dog"])
    result = runner.invoke(app, [*args, "--offline"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and all(name in errors[0] for name in ("t.pt", "f_19_259", "r_259_999")), result.stderr
    assert "--offline is set" in errors[0] and server.requests == []
    assert not list(tmp_path.glob("out/*.png"))
