"""`icdedit ui`: the page's functions (cache, the same edit as the CLI, errors) tested directly,
and the page end to end in a real headless browser (the system's Chromium, driven by
Playwright), skipped with the reason where no browser is installed."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from icdedit.errors import IcdEditError, InputError, UsageError
from icdedit.images import load_image
from icdedit.run_context import RunOptions
from icdedit.ui import (
    PageEdit,
    UiSession,
    build_app,
    examples_dir,
    mask_from_editor,
    page_examples,
    page_message,
    page_words,
    serve,
)
from icdedit.ui_server import announce

from .helpers import make_photo, run

SRC, TGT = "a photo of a cat", "a photo of a tiger"
REPO = Path(__file__).resolve().parents[1]


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


def _fake_serve(monkeypatch) -> list:
    """`icdedit.ui.serve` replaced: the CLI's calls recorded, nothing served."""
    served = []
    monkeypatch.setattr("icdedit.ui.serve", lambda session, host, port, mb, **how: served.append((host, port, mb, how)))
    return served


def test_ui_warns_about_a_non_local_host(monkeypatch, tiny_model):
    served = _fake_serve(monkeypatch)
    result = run("ui", "-m", tiny_model, "--host", "0.0.0.0", "--port", "7999")
    assert result.exit_code == 0, result.output
    assert "reachable from other machines" in result.stderr and served[0][:3] == ("0.0.0.0", 7999, 25)
    local = run("ui", "-m", tiny_model)
    assert local.exit_code == 0 and "reachable" not in local.stderr
    assert served[1][3]["share"] is False and served[1][3]["open_browser"] is False


def test_share_warns_as_a_non_local_host_does_and_open_is_passed_on(monkeypatch, tiny_model):
    served = _fake_serve(monkeypatch)
    result = run("ui", "-m", tiny_model, "--share", "--open")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "--share" in warnings[0] and "anyone with the link can run edits" in warnings[0]
    assert served[0][3]["share"] is True and served[0][3]["open_browser"] is True
    help_text = run("ui", "--help").stdout
    assert "--share" in help_text and "--open" in help_text


def test_open_opens_the_page_once_it_answers_and_gradios_share_line_is_silent(session, monkeypatch, capfd, tmp_path):
    """`--open` calls webbrowser.open after the server is up (the page answers at that moment);
    Gradio's "set share=True in launch()" line is not printed."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    opened = []

    def fake_open(url):
        with urllib.request.urlopen(url, timeout=10) as response:
            opened.append((url, response.status))
        return True

    monkeypatch.setattr("icdedit.ui_server.webbrowser.open", fake_open)
    port, said = _free_port(), []
    app = serve(session, "127.0.0.1", port, open_browser=True, say=said.append, block=False)
    try:
        assert opened == [(f"http://127.0.0.1:{port}/", 200)]
        assert said == [f"icdedit ui: serving on http://127.0.0.1:{port}/ (Ctrl+C stops it)"]
    finally:
        app.close()
    console = capfd.readouterr()
    assert "share=True" not in console.out + console.err and "Running on" not in console.out + console.err


def test_a_public_link_is_announced_and_opened_or_its_absence_said(monkeypatch):
    opened = []
    monkeypatch.setattr("icdedit.ui_server.webbrowser.open", lambda url: opened.append(url) or True)
    shared, said = SimpleNamespace(share_url="https://abc.gradio.live"), []
    assert announce(shared, "0.0.0.0", 7860, True, said.append, True) == "https://abc.gradio.live"
    assert said == [
        "icdedit ui: serving on http://127.0.0.1:7860/ (Ctrl+C stops it)",
        "icdedit ui: public link https://abc.gradio.live",
    ]
    assert opened == ["https://abc.gradio.live"]
    said.clear()
    assert announce(SimpleNamespace(share_url=None), "::1", 7860, True, said.append, False) == "http://[::1]:7860/"
    assert said[1].startswith("warning: no public link was made") and opened == ["https://abc.gradio.live"]


def _page_edit_handler(session, monkeypatch, tmp_path):
    """The function the page's Edit button calls, taken from the built page."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app = build_app(session)
    (handler,) = {block.fn for block in app.fns.values() if getattr(block.fn, "__name__", "") == "run"}
    return handler


def test_the_pages_errors_are_messages_with_one_console_line_at_most(session, monkeypatch, tmp_path, capfd):
    import gradio as gr

    handler = _page_edit_handler(session, monkeypatch, tmp_path)
    settings = (None, 19.0, 0.8, 0.3, 0.6, 4.0, 0)
    with pytest.raises(gr.Error) as caught:  # the user's error: the page's words, nothing on the console
        handler(make_photo(64, 64), "", "<b>a tiger</b>", *settings)
    assert caught.value.message.startswith("The source prompt is empty") and not caught.value.print_exception
    assert capfd.readouterr().err == ""
    with pytest.raises(gr.Error) as caught:
        handler(None, SRC, TGT, *settings)
    assert "Upload a photo" in caught.value.message

    def out_of_memory(page):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB <sic>\nmore detail")

    monkeypatch.setattr(session, "edit", out_of_memory)
    with pytest.raises(gr.Error) as caught:  # a failure: said on the page, and in one line to the console
        handler(make_photo(64, 64), SRC, TGT, *settings)
    assert caught.value.message == "The edit failed: CUDA out of memory. Tried to allocate 2 GiB &lt;sic&gt;"
    assert not caught.value.print_exception
    assert capfd.readouterr().err.splitlines() == [
        "icdedit ui: an edit failed: CUDA out of memory. Tried to allocate 2 GiB <sic>"
    ]


PAGE_MISTAKES = [  # (what the page sends, what the page says)
    ({"src": ""}, "The source prompt is empty (give a short description such as 'a photo of a cat')"),
    ({"tau": 2.0}, "Tau 2 is out of range (dynamic guidance switches on below"),
    ({"guidance": -1.0}, "Guidance -1 is out of range ("),
    ({"cross_replace": 1.5}, "Cross-attention fraction 1.5 is out of range ("),
    ({"self_replace": 2.0}, "Self-attention fraction 2 is out of range ("),
    ({"amplify": 99.0}, "Amplify edited words 99 is out of range ("),
    ({"seed": -1}, "Seed -1 is out of range (a whole number from 0 to 2^63 - 1)"),
]


@pytest.mark.parametrize("mistake, said", PAGE_MISTAKES, ids=[next(iter(m)) for m, _ in PAGE_MISTAKES])
def test_the_librarys_errors_are_said_in_the_pages_words(session, mistake, said):
    values = {"photo": make_photo(64, 64), "src": SRC, "targets": (TGT,), **mistake}
    with pytest.raises(IcdEditError) as caught:
        session.edit(PageEdit(**values))
    message = page_message(caught.value, session.folder)
    assert message.startswith(said), message
    assert "--" not in message and "command line" not in message and "_" not in message, message


def test_page_words_name_the_pages_own_files_and_controls(tmp_path):
    folder = tmp_path / "icdedit-ui-x"
    error = InputError(f"{folder}/photo-0123abcdef012345.png: the image file is damaged", "re-export it")
    assert page_message(error, folder) == "The photo: the image file is damaged (re-export it)"
    mask = InputError(f"mask {folder}/mask-00ff00ff00ff00ff.png is all black", "white marks where it may change")
    assert page_message(mask, folder).startswith("The painted mask is all black")
    assert page_words("--cross-replace is ignored by method x; --self_replace too") == (
        "Cross-attention fraction is ignored by method x; Self-attention fraction too"
    )
    assert page_words("pass --tgt 'a photo of ...'") == "pass 'a photo of ...'"
    assert page_words("the tgt is empty") == "the target prompt is empty"


def test_the_examples_are_the_bundled_photos_with_their_prompts():
    rows = page_examples()
    assert [Path(photo).name for photo, _, _ in rows] == ["chelsea.jpg", "coffee.jpg", "astronaut.jpg"]
    for photo, src, tgt in rows:
        assert load_image(Path(photo)).size[0] >= 300 and src and tgt and src != tgt
    assert rows[0][1:] == [SRC, TGT]  # chelsea.jpg: the cat to a tiger, as examples/README.md edits it


def test_the_example_photos_travel_with_the_package():
    """One folder, examples/, serves a checkout and an installed package: the wheel carries it as
    icdedit/examples (where `examples_dir` looks first) and the sdist carries it for the wheel
    built from it and for `make test-sdist`."""
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]
    assert config["wheel"]["force-include"]["examples"] == "icdedit/examples"
    assert "examples" in config["sdist"]["include"]
    assert examples_dir() in (REPO / "icdedit" / "examples", REPO / "examples")


def test_an_installed_package_finds_its_own_examples_and_a_page_without_them_has_none(tmp_path, monkeypatch):
    """The wheel's layout: site-packages/icdedit/examples, no examples/ beside the package."""
    package = tmp_path / "site-packages" / "icdedit"
    shutil.copytree(REPO / "examples", package / "examples")
    monkeypatch.setattr("icdedit.ui.PACKAGE_DIR", package)
    assert examples_dir() == package / "examples"
    assert [Path(photo).parent for photo, _, _ in page_examples()] == [package / "examples"] * 3
    (package / "examples" / "coffee.jpg").unlink()
    assert examples_dir() is None and page_examples() == []


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


def _serve_in_subprocess(tmp_path, tiny_model, port: int, extra=()) -> tuple[subprocess.Popen, object]:
    """`icdedit ui` on the tiny model in a process of its own, with a temp folder of its own
    ($TMPDIR) to look into; its console goes to tmp_path/server.log."""
    (tmp_path / "tmp").mkdir()
    env = {
        **os.environ,
        "ICDEDIT_HOME": str(tmp_path / "home"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "TMPDIR": str(tmp_path / "tmp"),
    }
    log = open(tmp_path / "server.log", "w")
    command = [sys.executable, "-m", "icdedit", "ui", "-m", str(tiny_model), "--port", str(port), "--device", "cpu"]
    command += [str(arg) for arg in extra]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    return process, log


def _stop_and_check(process: subprocess.Popen, tmp_path, signal_number: int) -> str:
    """Stop the server with a signal: it exits 0 without a traceback and leaves no icdedit-ui-*
    folder behind. Its console is returned."""
    folders = list((tmp_path / "tmp").glob("icdedit-ui-*"))
    assert len(folders) == 1, folders  # the page's own folder, while it serves
    process.send_signal(signal_number)
    assert process.wait(timeout=60) == 0
    console = (tmp_path / "server.log").read_text()
    assert "Traceback" not in console and f"stopping ({signal.Signals(signal_number).name})" in console, console
    assert not list((tmp_path / "tmp").glob("icdedit-ui-*"))
    assert "share=True" not in console  # Gradio's line about launch(), which a CLI user cannot act on
    return console


def test_sigterm_stops_the_page_and_removes_its_folder(tmp_path, tiny_model):
    port = _free_port()
    process, log = _serve_in_subprocess(tmp_path, tiny_model, port)
    try:
        _wait_for(f"http://127.0.0.1:{port}/", process)
        console = _stop_and_check(process, tmp_path, signal.SIGTERM)
        assert f"serving on http://127.0.0.1:{port}/" in console
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (apt-get install chromium)")
def test_the_page_edits_a_photo_in_a_real_browser(tmp_path, tiny_model):
    """Upload, describe (the caption fills the source prompt) and edit; an example click loads its
    photo and prompts (and edits); a user error is
    the page's message, not a traceback on the console; Ctrl-C stops it and removes its folder."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from icdedit.captions import CAPTION_SETTINGS

    from .test_captions import build_tiny_captioner, reference_caption

    make_photo(96, 64).save(tmp_path / "photo.png")
    captioner = build_tiny_captioner(tmp_path / "captioner")
    port = _free_port()
    process, log = _serve_in_subprocess(tmp_path, tiny_model, port, ["--captioner", captioner])
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
            # "Describe the photo" fills the source prompt with the captioner's caption of the upload
            page.locator("#describe").click()
            page.wait_for_function("() => document.querySelector('#src textarea').value !== ''", timeout=60_000)
            caption = reference_caption(captioner, tmp_path / "photo.png", CAPTION_SETTINGS)
            assert page.locator("#src textarea").input_value() == caption
            page.locator("#src textarea").fill(SRC)
            page.locator("#tgt textarea").fill(TGT)

            def edit_until(condition: str) -> None:
                """Click Edit until `condition` holds: the editor takes a photo in a moment, and
                until then the page asks for one."""
                for attempt in range(10):
                    page.locator("#edit").click()
                    try:
                        page.wait_for_function(condition, timeout=20_000)
                        return
                    except sync_api.TimeoutError:
                        assert attempt < 9, "no edit appeared: " + (tmp_path / "server.log").read_text()[-2000:]

            edit_until("() => document.querySelector('#command textarea')?.value.startsWith('icdedit edit')")
            command = page.locator("#command textarea").input_value()
            shown = page.locator("#result img").count()  # before and after
            assert f"-t '{TGT}'" in command and "--seed 0" in command and shown == 2

            page.get_by_text("a cup of coffee", exact=True).last.click()  # the example's row
            page.wait_for_function("() => document.querySelector('#src textarea').value === 'a cup of coffee'")
            assert page.locator("#tgt textarea").input_value() == "a cup of tea"
            # the example's photo (examples/coffee.jpg, 600x400) is the one edited: the before image shows it
            example_edited = (
                "() => document.querySelector('#command textarea').value.includes(\"-t 'a cup of tea'\")"
                " && document.querySelector('#result img')?.naturalWidth === 600"
            )
            edit_until(example_edited)
            assert page.locator("#result img").first.evaluate("img => img.naturalHeight") == 400

            page.locator("#src textarea").fill("")
            page.locator("#edit").click()
            message = page.locator(".toast-body").first
            message.wait_for(timeout=20_000)
            assert "The source prompt is empty" in message.inner_text() and "--src" not in message.inner_text()
            browser.close()
        assert process.poll() is None  # still serving
        console = _stop_and_check(process, tmp_path, signal.SIGINT)
        assert "source prompt" not in console and "empty" not in console  # the user's error is the page's
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
