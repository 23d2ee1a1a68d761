"""Startup: help, the version, the listings and usage errors are answered without importing torch,
diffusers or transformers (they take seconds to import; the README's first commands should not).

Each command line runs in one fresh Python process through the real entry point (`icdedit.cli.main`),
one after the other; after each, the heavy modules must still be absent from `sys.modules`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "diffusers", "transformers")
ROOT = Path(__file__).resolve().parents[1]  # the checkout whose icdedit is tested

# command line -> its exit code
LIGHT = {
    ("--help",): 0,
    ("--version",): 0,
    ("-V",): 0,
    (): 2,  # no command: the help, as Click's usage error
    ("presets",): 0,
    ("presets", "--json"): 0,
    ("models",): 0,
    ("models", "--json"): 0,
    **{(name, "--help"): 0 for name in ("invert", "reconstruct", "edit", "batch", "generate", "eval", "ui")},
    **{(name, "--help"): 0 for name in ("models", "download", "presets")},
    ("edit",): 2,  # no arguments: its help
    # Click's usage errors
    ("edit", "photo.jpg", "--src", "a cat"): 2,  # no --tgt
    ("invert", "photo.jpg", "--prompt", "a cat", "--size", "abc"): 2,
    ("edit", "photo.jpg", "-t", "a dog", "--bogus"): 2,
    ("frobnicate",): 2,
    ("edit", "photo.jpg", "-t", "a dog", "--size", "abc", "--json"): 2,
    # the commands' own usage checks, before they load anything
    ("generate",): 2,
    ("generate", "a fox", "--out", "folder"): 2,
    ("edit", "photo.jpg", "-t", "a dog", "--score", "psnr"): 2,
    ("ui", "--port", "0"): 2,
}

# Runs the command lines one after the other in one interpreter: the modules a line imports stay,
# so the first line that imports a heavy one is the one it is reported against.
SCRIPT = """
import contextlib, io, json, sys
from icdedit.cli import main
HEAVY = %r
outcomes = []
for args in json.loads(sys.argv[1]):
    sys.argv = ["icdedit", *args]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
    outcomes.append({"code": code, "heavy": [name for name in HEAVY if name in sys.modules]})
print(json.dumps(outcomes))
""" % (HEAVY,)


def run_in_one_process(lines) -> list[dict]:
    """Each command line's exit code and the heavy modules imported once it has run."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps([list(args) for args in lines])],
        cwd=ROOT,  # the checkout's icdedit comes first on sys.path
        env={**os.environ, "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_light_commands_do_not_import_torch():
    outcomes = run_in_one_process(LIGHT)
    problems = [
        (" ".join(args), outcome, f"expected exit {code}")
        for (args, code), outcome in zip(LIGHT.items(), outcomes)
        if outcome["heavy"] or outcome["code"] != code
    ]
    assert not problems, problems[:1]  # the first one imported what every later one shows


def test_the_probe_sees_a_heavy_import():
    """The same probe on a command that makes a model does see torch: the test above could fail."""
    (outcome,) = run_in_one_process([("download", "tiny")])  # the tiny model is built with torch
    assert outcome["code"] == 0 and "torch" in outcome["heavy"], outcome
