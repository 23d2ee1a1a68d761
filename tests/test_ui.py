"""`icdedit ui`: the page's functions (cache, the same edit as the CLI, errors) tested directly,
and the page end to end in a real headless browser (the system's Chromium, driven by
Playwright), skipped with the reason where no browser is installed."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image, ImageDraw

from icdedit.errors import InputError, UsageError
from icdedit.run_context import RunOptions
from icdedit.ui import PageEdit, UiSession, mask_from_editor

from .helpers import make_photo, run

SRC, TGT = "a photo of a cat", "a photo of a tiger"


@pytest.fixture
def session(editor, tmp_path, tiny_model):
    return UiSession(editor, tmp_path / "ui", model=str(tiny_model))


def _mask(size=(96, 64)) -> Image.Image:
    mask = Image.new("L", size)
    ImageDraw.Draw(mask).rectangle((10, 10, 60, 50), fill=255)
    return mask


def test_a_photos_inversion_is_cached_and_settings_only_decode_again(session, monkeypatch):
    calls = []
    original = session.editor.invert
    monkeypatch.setattr(session.editor, "invert", lambda *a, **k: calls.append(a) or original(*a, **k))
    photo = make_photo(96, 64)
    first = session.edit(PageEdit(photo, SRC, (TGT,), guidance=15.0))
    again = session.edit(PageEdit(photo, SRC, ("a photo of a lion",), guidance=9.0, tau=0.6))
    assert first.inverted and not again.inverted and len(calls) == 1
    other_seed = session.edit(PageEdit(photo, SRC, (TGT,), seed=1))
    other_prompt = session.edit(PageEdit(photo, "a photo of a kitten", (TGT,)))
    assert other_seed.inverted and other_prompt.inverted and len(calls) == 3
    assert not np.array_equal(np.asarray(first.images[0]), np.asarray(again.images[0]))


def test_the_page_edit_is_the_cli_edit_of_the_command_it_shows(session, tmp_path, monkeypatch):
    """The command the page shows gives the page's image, bit for bit (the same files, settings,
    words and seed through the same functions)."""
    monkeypatch.chdir(tmp_path)
    page = PageEdit(make_photo(96, 64, seed=3), SRC, (TGT,), "strong", 15.0, 0.7, 0.4, 0.5, 3.0, 2, _mask())
    result = session.edit(page)
    args = shlex.split(result.command)
    assert args[:2] == ["icdedit", "edit"] and "--mask" in args
    assert args[args.index("--amplify") + 1] == "3"  # the derived words' factor: here, tiger's
    cli = run(*args[1:], "-o", "cli.png")
    assert cli.exit_code == 0, cli.output
    assert np.array_equal(np.asarray(Image.open("cli.png")), np.asarray(result.images[0]))
    assert result.latent_file.is_file() and result.image_file.is_file()
    assert np.array_equal(np.asarray(Image.open(result.image_file)), np.asarray(result.images[0]))


def test_page_errors_are_messages(session):
    photo = make_photo(64, 64)
    with pytest.raises(UsageError, match="seed -1"):
        session.edit(PageEdit(photo, SRC, (TGT,), seed=-1))
    with pytest.raises(InputError, match="target prompt"):
        session.edit(PageEdit(photo, SRC, ("  ",)))
    with pytest.raises(InputError, match="empty"):
        session.edit(PageEdit(photo, "", (TGT,)))
    assert session.edit(PageEdit(photo, SRC, (TGT,))).images  # and the session goes on


def test_the_command_carries_the_servers_run_options_and_the_latent_its_prompt(editor, tmp_path):
    session = UiSession(editor, tmp_path / "ui", run=RunOptions(device="cpu", dtype="fp32", attention="auto"))
    photo = make_photo(64, 64)
    first = session.edit(PageEdit(photo, SRC, (TGT,)))
    assert "--device cpu --dtype fp32" in first.command and "--attention" not in first.command
    other = session.edit(PageEdit(photo, "a photo of a kitten", (TGT,)))
    assert other.latent_file != first.latent_file  # another source prompt, another inversion file


def test_sdxl_pages_leave_out_prompt_to_prompt_settings(xl_editor, tmp_path):
    xl = UiSession(xl_editor, tmp_path / "xl", model="tiny-xl")
    result = xl.edit(PageEdit(make_photo(64, 64), SRC, (TGT,), None, 7.0, 0.7, 0.4, 0.5, 3.0))
    assert "--cross-replace" not in result.command and "--amplify" not in result.command
    assert "--guidance 7" in result.command


def test_the_painted_mask_is_where_strokes_are():
    photo = make_photo(40, 30)
    stroke = Image.new("RGBA", (40, 30))
    ImageDraw.Draw(stroke).rectangle((5, 5, 14, 9), fill=(255, 255, 255, 255))
    got_photo, mask = mask_from_editor({"background": photo, "layers": [stroke], "composite": photo})
    assert got_photo is photo and np.asarray(mask).sum() == 255 * 10 * 5
    assert mask_from_editor({"background": photo, "layers": [], "composite": photo}) == (photo, None)
    assert mask_from_editor(None) == (None, None)


def test_ui_warns_about_a_non_local_host(monkeypatch, tiny_model):
    served = []
    monkeypatch.setattr("icdedit.ui.serve", lambda session, host, port, mb: served.append((host, port, mb)))
    result = run("ui", "-m", tiny_model, "--host", "0.0.0.0", "--port", "7999")
    assert result.exit_code == 0, result.output
    assert "reachable from other machines" in result.stderr and served == [("0.0.0.0", 7999, 25)]
    local = run("ui", "-m", tiny_model)
    assert local.exit_code == 0 and "reachable" not in local.stderr


# -- end to end in a real browser -------------------------------------------------------------------
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"icdedit ui exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"icdedit ui did not answer on {url} within {seconds} s")


@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (apt-get install chromium)")
def test_the_page_edits_a_photo_in_a_real_browser(tmp_path, tiny_model):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    make_photo(96, 64).save(tmp_path / "photo.png")
    port = _free_port()
    env = {**os.environ, "ICDEDIT_HOME": str(tmp_path / "home"), "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "icdedit", "ui", "-m", str(tiny_model), "--port", str(port), "--device", "cpu"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for(url, process)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_load_state("networkidle")
            page.locator("#photo input[type=file]").set_input_files(str(tmp_path / "photo.png"))
            page.wait_for_function("() => document.querySelector('#photo canvas') !== null", timeout=60_000)
            page.locator("#src textarea").fill(SRC)
            page.locator("#tgt textarea").fill(TGT)
            done = "() => document.querySelector('#command textarea')?.value.startsWith('icdedit edit')"
            for attempt in range(10):  # the editor takes the photo in a moment: until then the page asks for it
                page.locator("#edit").click()
                try:
                    page.wait_for_function(done, timeout=20_000)
                    break
                except sync_api.TimeoutError:
                    assert attempt < 9, "no edit appeared: " + (tmp_path / "server.log").read_text()[-2000:]
            command = page.locator("#command textarea").input_value()
            shown = page.locator("#result img").count()  # before and after
            browser.close()
        assert f"-t '{TGT}'" in command and "--seed 0" in command and shown == 2
        assert process.poll() is None  # still serving
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
