"""Nothing hangs, nothing runs unbounded, nothing ends in a traceback, nothing is left behind
(issue #23): FIFOs, sizes recorded in files, bad metadata, output names, the umask, temp names."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from .helpers import assert_clean_error, edit_args, make_photo, run

NO_MODEL = "no-such-model"  # a latent naming it fails on the model: our checks must come first


@contextlib.contextmanager
def deadline(seconds: int = 20):
    """Fail instead of hanging: a regression that opens a FIFO waits for a writer forever."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s (a FIFO was opened?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_latent(path: Path, shape=(1, 4, 8, 8), **metadata) -> Path:
    header = {
        "format": "icdedit-latent",
        "model": NO_MODEL,
        "prompt": "a photo of a cat",
        "seed": "0",
        "processed_size": f"{shape[3] * 8}x{shape[2] * 8}",
        "original_size": f"{shape[3] * 8}x{shape[2] * 8}",
        **metadata,
    }
    save_file({"latent": torch.zeros(shape)}, str(path), metadata=header)
    return path


# -- 4. hangs and unbounded work ----------------------------------------------------------------------
def test_a_fifo_given_as_the_photo_is_refused_not_opened(work):
    os.mkfifo(work / "fifo.png")
    before = sorted(p.name for p in work.iterdir())
    with deadline():
        result = run(*edit_args(work / "fifo.png", "a cat", "a dog", model=NO_MODEL))
    assert_clean_error(result, "fifo.png", "not a regular file", folder=work, before=before, hint=True)


def test_a_fifo_given_as_a_latent_file_or_a_mask_is_refused_not_opened(work):
    os.mkfifo(work / "fifo.safetensors")
    os.mkfifo(work / "mask.png")
    make_photo(64, 64).save(work / "photo.png")
    with deadline():
        latent = run(*edit_args(work / "fifo.safetensors", None, "a dog", model=NO_MODEL))
        mask = run(*edit_args(work / "photo.png", "a cat", "a dog", extra=["--mask", work / "mask.png"]))
    assert_clean_error(latent, "fifo.safetensors", "not a regular file")
    assert_clean_error(mask, "mask.png")
    assert "Traceback" not in mask.output


def test_a_fifo_named_in_a_batch_manifest_fails_its_row_only(work, tiny_model):
    os.mkfifo(work / "fifo.png")
    make_photo(64, 64).save(work / "a.png")
    rows = [{"image": "fifo.png", "src": "a cat", "tgt": "a dog"}, {"image": "a.png", "src": "a cat", "tgt": "a dog"}]
    (work / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with deadline(120):
        result = run(
            "batch", work / "m.jsonl", "--out", "out", "--model", tiny_model, "--device", "cpu", "--size", 64, "--json"
        )
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["done"] == [2] and "not a regular file" in summary["failed"]["1"], summary


@pytest.mark.parametrize(
    "shape, metadata, fragment",
    [
        ((1, 4, 1024, 1024), {}, "(1, 4, 1024, 1024)"),
        ((1, 4, 8, 8), {"processed_size": "8192x8192"}, "processed_size 8192x8192"),
        ((1, 4, 8, 8), {"original_size": "100000x100000"}, "original_size 100000x100000"),
    ],
)
def test_sizes_recorded_in_a_latent_file_meet_the_command_line_limits(work, shape, metadata, fragment):
    path = write_latent(work / "big.safetensors", shape, **metadata)
    result = run(*edit_args(path, None, "a dog", model=NO_MODEL, size=None))
    assert_clean_error(result, "big.safetensors", fragment, " is over ", hint=True)


# -- 5. tracebacks instead of one line ---------------------------------------------------------------
@pytest.mark.parametrize("seed", ["1.5", "abc", "-3", str(2**64)])
def test_a_latent_with_a_bad_seed_is_one_line(work, seed):
    path = write_latent(work / "seed.safetensors", seed=seed)
    result = run(*edit_args(path, None, "a dog", model=NO_MODEL, size=None))
    assert_clean_error(result, "seed.safetensors", f"seed = {seed!r}", hint=True)


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: the checks under test come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the check")

    monkeypatch.setattr("icdedit.workflow.load_editor", refuse)


def test_a_nul_byte_in_an_output_name_is_refused_before_the_model(work, tiny_model, no_model):
    """The command line's -o never holds one (Click refuses it, exit 2); the library and the
    page can: refused with the other output checks, not by the writer after the edit ran."""
    from icdedit.errors import OutputError
    from icdedit.plans import EditRequest, plan_edit
    from icdedit.workflow import InvertRequest, ReconstructRequest, run_invert, run_reconstruct

    make_photo(64, 64).save(work / "photo.png")
    before = sorted(p.name for p in work.iterdir())
    model = str(tiny_model)
    calls = [
        lambda: plan_edit(EditRequest(work / "photo.png", ["a dog"], "a cat", model=model, output=Path("a\0b.png"))),
        lambda: run_invert(InvertRequest(work / "photo.png", "a cat", model=model, output=Path("x\0.safetensors"))),
        lambda: run_reconstruct(ReconstructRequest(work / "photo.png", "a cat", model=model, output=Path("\0.png"))),
    ]
    for call in calls:
        with pytest.raises(OutputError, match="NUL byte"):
            call()
    assert sorted(p.name for p in work.iterdir()) == before
    result = run(*edit_args(work / "photo.png", "a cat", "a dog", "a\0b.png", model=tiny_model))
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_nul_byte_in_a_manifest_output_cell_is_that_rows_problem(work, tiny_model):
    make_photo(64, 64).save(work / "a.png")
    rows = [
        {"image": "a.png", "src": "a cat", "tgt": "a dog", "output": "bad\0name.png"},
        {"image": "a.png", "src": "a cat", "tgt": "a dog", "output": "good.png"},
    ]
    (work / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run(
        "batch", work / "m.jsonl", "--out", "out", "--model", tiny_model, "--device", "cpu", "--size", 64, "--json"
    )
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["done"] == [2] and "NUL byte" in summary["failed"]["1"], summary
    assert "Traceback" not in result.output


# -- 6. valid input refused, leftovers, privacy ------------------------------------------------------
def test_an_output_name_of_255_bytes_is_written(work, tiny_model):
    """The temporary name (NAME.<random>.part.png) is kept within the 255-byte limit too."""
    make_photo(64, 64).save(work / "photo.png")
    output = work / ("é" * 125 + "a.png")  # 255 bytes in UTF-8
    assert len(os.fsencode(output.name)) == 255
    result = run(*edit_args(work / "photo.png", "a cat", "a dog", output, model=tiny_model))
    assert result.exit_code == 0, result.output
    assert output.is_file() and not list(work.glob(".*"))


def test_an_output_name_over_255_bytes_is_one_line_before_the_model(work, tiny_model, no_model):
    make_photo(64, 64).save(work / "photo.png")
    before = sorted(p.name for p in work.iterdir())
    result = run(*edit_args(work / "photo.png", "a cat", "a dog", "x" * 252 + ".png", model=tiny_model))
    assert_clean_error(result, "256 bytes", "255-byte limit", folder=work, before=before, hint=True)


def test_a_photo_with_a_long_name_gets_shortened_default_outputs(work, tiny_model):
    """The default names would be 266 bytes: the photo's part is cut and ends in a hash of it,
    the target's part is kept, and two photos that share the first 200 bytes stay apart."""
    names = ["p" * 236 + "-one.png", "p" * 236 + "-two.png"]  # 244 bytes each
    outputs = []
    for name in names:
        make_photo(64, 64).save(work / name)
        result = run(*edit_args(work / name, "a cat", "a dog", model=tiny_model, extra=["--side-by-side", "--json"]))
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.stdout))
    made = sorted(p.name for p in work.iterdir() if p.name not in names)
    assert len(made) == 4 and all(len(os.fsencode(n)) <= 255 for n in made), made
    assert all(n.startswith("p" * 100) and ("-a-dog" in n) for n in made), made
    edits = [n for n in made if not n.endswith("side-by-side.png")]
    assert len(set(edits)) == 2 and all(n.endswith("-a-dog.png") for n in edits), edits


def test_outputs_respect_the_umask(work, tiny_model):
    make_photo(64, 64).save(work / "photo.png")
    previous = os.umask(0o077)
    try:
        edit = run(*edit_args(work / "photo.png", "a cat", "a dog", "private.png", model=tiny_model))
        invert = run("invert", "photo.png", "--prompt", "a cat", "--model", tiny_model, "--device", "cpu", "--size", 64)
    finally:
        os.umask(previous)
    assert edit.exit_code == 0 and invert.exit_code == 0, edit.output + invert.output
    assert (work / "private.png").stat().st_mode & 0o777 == 0o600
    assert (work / "photo.safetensors").stat().st_mode & 0o777 == 0o600
    os.umask(0o022)
    try:
        assert run(*edit_args(work / "photo.png", "a cat", "a dog", "shared.png", model=tiny_model)).exit_code == 0
    finally:
        os.umask(previous)
    assert (work / "shared.png").stat().st_mode & 0o777 == 0o644


# -- the page: usage errors and the port before the model, its files removed when it stops --------
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--port", "-5"], "--port -5"),
        (["--port", "70000"], "--port 70000"),
        (["--max-upload-mb", "-1"], "--max-upload-mb -1"),
    ],
)
def test_ui_refuses_unusable_values_before_loading_the_model(args, fragment):
    result = run("ui", "-m", NO_MODEL, *args)
    assert_clean_error(result, fragment, code=2, hint=True)


def test_ui_on_a_port_in_use_is_one_line_before_loading_the_model(monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", "")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("ui", "-m", NO_MODEL, "--port", port)
    assert_clean_error(result, f"127.0.0.1:{port}", "--port", hint=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_the_page_leaves_no_files_when_stopped(tmp_path, tiny_model, stop):
    """Uploads (Gradio's copies) and the session's files live in one folder, removed on Ctrl-C and SIGTERM."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("gradio")
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(temp), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GRADIO_TEMP_DIR", None)
    command = [sys.executable, "-m", "icdedit", "ui", "-m", str(tiny_model), "--port", str(port), "--device", "cpu"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline_at = time.monotonic() + 180
        while True:
            assert process.poll() is None and time.monotonic() < deadline_at, "the page did not start"
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        buffer = io.BytesIO()
        make_photo(32, 32).save(buffer, format="PNG")
        upload = httpx.post(url + "gradio_api/upload", files={"files": ("photo.png", buffer.getvalue())}, timeout=30)
        assert upload.status_code == 200, upload.text
        (session,) = temp.glob("icdedit-ui-*")
        assert [p for p in session.rglob("photo.png")], sorted(temp.rglob("*"))
        process.send_signal(stop)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not list(temp.glob("icdedit-ui-*")) and not list(temp.rglob("photo*.png")), sorted(temp.rglob("*"))


# -- eval's inputs -------------------------------------------------------------------------------------
def _batch_folder(work: Path) -> Path:
    """A `batch` output folder by hand: one good item, one line not UTF-8, one with "output": null."""
    out = work / "out"
    out.mkdir()
    for name in ("a.png", "b.png"):
        make_photo(64, 64).save(out / name)
    good = {"item": 1, "status": "done", "image": str(out / "a.png"), "output": str(out / "b.png"), "tgt": "a dog"}
    null = {**good, "item": 2, "output": None}
    lines = [json.dumps(good).encode(), b'{"item": 3, "status": "done", "tgt": "\xff\xfe"}', json.dumps(null).encode()]
    (out / "results.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return out


def test_eval_skips_report_lines_it_cannot_read_with_a_note(work):
    result = run("eval", _batch_folder(work), "--metrics", "psnr", "--json")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "results.jsonl line 2 is not UTF-8 text: skipped" in result.stderr, result.stderr
    assert "line 3: item 2's image, output or tgt is not text: skipped" in result.stderr, result.stderr
    rows = (work / "out" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("1,"), rows


@pytest.mark.parametrize("mask", ["abc", 5, None, {"0": 1}])
def test_a_pie_bench_mask_that_is_not_a_list_is_that_items_problem(work, mask):
    out = _batch_folder(work)
    (work / "mapping.json").write_text(json.dumps({"a": {"image_path": "a.jpg", "mask": mask}}))
    result = run("eval", out, "--pie-bench", work / "mapping.json", "--metrics", "psnr", "--json")
    assert "Traceback" not in result.output
    assert f"the mask is {type(mask).__name__}, not a list" in result.stderr, result.output


# -- download: web addresses only --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["path", "file-url", "ftp"])
def test_download_refuses_sources_that_are_not_web_addresses(work, tiny_spec, monkeypatch, kind):
    """Policy: a model YAML's sources are http(s) only. A local path or file:// address is refused,
    not copied (a YAML from elsewhere must not copy this machine's files into the weights folder)."""
    import yaml

    home = work / "home"
    monkeypatch.setenv("ICDEDIT_HOME", str(home))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    secret = work / "secret.tar.gz"
    secret.write_bytes(b"not for the weights folder")
    address = {"path": str(secret), "file-url": secret.as_uri(), "ftp": "ftp://example.org/t.tar.gz"}[kind]
    data = {
        "name": "local-sources",
        "base": str(Path(tiny_spec.base)),
        "teacher": "$ICDEDIT_HOME/t.pt",
        "forward_lora": "$ICDEDIT_HOME/f_19_259.safetensors",
        "reverse_lora": "$ICDEDIT_HOME/r_259_999.safetensors",
        "forward_timesteps": [19, 259],
        "reverse_timesteps": [259, 999],
        "sources": {"teacher": address, "loras": address},
    }
    (work / "local.yaml").write_text(yaml.safe_dump(data))
    result = run("download", work / "local.yaml")
    assert_clean_error(result, repr(address), "not an http(s) address", "sources.teacher", hint=True)
    assert not home.exists() or not [p for p in home.rglob("*") if p.is_file()]
