"""Nothing hangs, nothing runs unbounded, nothing ends in a traceback, nothing is left behind
(issue #23): FIFOs, sizes recorded in files, bad metadata, output names, the umask, temp names."""

from __future__ import annotations

import contextlib
import json
import os
import signal
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
