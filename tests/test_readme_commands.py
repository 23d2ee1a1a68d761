"""The README's commands, run as written from a fresh clone's folder.

Two tests:
- the Set-up section's first command, exactly as written (the default model, `sd15-4step-v1`),
  against a stand-in weights folder: tiny random-weight files with the released files' names
  in `$ICDEDIT_HOME`, and the base in a Hugging Face hub cache under the hub id the model YAML
  names, offline. That is the path a user with the real weights takes, file names and all;
- every other `icdedit` command in the README's and examples/README.md's bash blocks, in one
  process and in the README's order, with only the model swapped for the built-in tiny one of
  its family (the released models run at 512 / 1024 px, too slow for a CPU test suite). Each must
  exit 0 and write what it says. Commands that need data a clone does not have (the official
  benchmark files, a pairs file, a server) are listed in NEEDS_OUTSIDE_DATA, and that list must
  match the README exactly, so a new command is run unless someone says why not.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = (ROOT / "README.md", ROOT / "examples" / "README.md")

# Commands that need what a clone does not have, by a fragment of the command: why.
NEEDS_OUTSIDE_DATA = {
    "editing_pie_bench_140.csv": "the official benchmark manifest and PIE-Bench's photos",
    "pie-edits/": "a PIE-Bench batch's output and its mapping_file.json",
    "pairs.csv": "another tool's edits",
    "generation_coco.csv": "the official COCO prompt file",
    "icdedit ui": "a server (tests/test_ui.py runs the page)",
    "icdedit download": "the network (tests/test_download.py fetches from a local server)",
    "icdedit eval res ": "a PIE-Bench batch's output and its mapping_file.json",
    # the captioner's weights (tests/test_captions.py runs these with a random-weight captioner,
    # whose captions are random words: no `cat` to swap)
    "--src auto": "the captioner's weights",
    "--prompt auto": "the captioner's weights",
    "--swap cat=lion": "a latent file made with --prompt auto",
    "--engine ray": "a Ray cluster (tests/test_ray_engine.py runs both engines on a local Ray)",
}
TINY = {"sd15-4step-v1": "tiny", "sdxl-4step-v2": "tiny-xl", "tiny": "tiny", "tiny-xl": "tiny-xl"}


def bash_commands(document: Path) -> list[str]:
    """Every `icdedit ...` line of the document's bash blocks (indented blocks too), comments cut."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", document.read_text(), re.S):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("icdedit "):
                commands.append(line)
    return commands


def without_comment(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def needs_outside_data(command: str) -> bool:
    return any(fragment in command for fragment in NEEDS_OUTSIDE_DATA)


def with_tiny_model(args: list[str]) -> list[str]:
    """The command with the released model swapped for its family's tiny one."""
    args = list(args)
    for flag in ("-m", "--model"):
        if flag in args:
            place = args.index(flag) + 1
            args[place] = TINY[args[place]]
            return args
    if args[1] in ("edit", "invert", "reconstruct", "batch", "generate") and not args[2].endswith(".safetensors"):
        return [*args, "--model", "tiny"]
    return args  # a latent file: the model is the one that made it


def clone_folder(tmp_path: Path) -> Path:
    """A folder laid out like the clone, as far as the README's commands read it."""
    folder = tmp_path / "clone"
    shutil.copytree(ROOT / "examples", folder / "examples")
    return folder


def test_every_readme_command_is_run_or_said_why_not():
    commands = [c for document in DOCUMENTS for c in bash_commands(document)]
    assert len(commands) > 15  # the parser found the README's blocks
    for fragment in NEEDS_OUTSIDE_DATA:
        assert any(fragment in c for c in commands), f"NEEDS_OUTSIDE_DATA names {fragment!r}, which no command uses"
    for command in commands:
        args = without_comment(command)
        for arg in args:  # a photo, mask or manifest the clone must have
            if arg.startswith("examples/") and "*" not in arg:
                assert (ROOT / arg).is_file(), f"{command}: {arg} is not in the clone"


DRIVER = """
import json, sys
from icdedit.cli import app
results = []
for args in json.loads(sys.argv[1]):
    try:
        app(args, prog_name="icdedit", standalone_mode=False)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    except Exception as exc:  # a crash is the command's failure, and the rest still run
        code = f"{type(exc).__name__}: {exc}"
    results.append(code)
print(json.dumps(results))
"""


def run_commands(commands: list[list[str]], cwd: Path, env: dict) -> list:
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps([args[1:] for args in commands])],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_readme_commands_run_as_written_with_the_tiny_models(tmp_path):
    folder = clone_folder(tmp_path)
    commands = [
        without_comment(c) for document in DOCUMENTS for c in bash_commands(document) if not needs_outside_data(c)
    ]
    # `invert` makes the latent file that the edit section reuses: run the inversions first.
    commands.sort(key=lambda args: args[1] != "invert")
    runs = [with_tiny_model(args) for args in commands]
    env = {"ICDEDIT_HOME": str(tmp_path / "weights"), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    codes = run_commands(runs, folder, env)
    failures = [f"{shlex.join(args)} -> {code}" for args, code in zip(runs, codes) if code != 0]
    assert not failures, "\n".join(failures)
    written = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    expected = ("cat.safetensors", "cat-rec.png", "cat-rec-2.png", "tiger-grid-cross_replace-self_replace.png")
    for name in (*expected, "edited/results.jsonl", "paintings/results.jsonl"):
        assert name in written, f"the README says this is written: {name} (written: {sorted(written)})"
    for name in written:
        if name.endswith(".png") and not name.startswith("examples/"):
            with Image.open(folder / name) as image:
                assert min(image.size) > 0
    # the inputs are as the clone has them
    for photo in (ROOT / "examples").iterdir():
        assert (folder / "examples" / photo.name).read_bytes() == photo.read_bytes()


def stand_in_weights(tmp_path: Path) -> dict:
    """Tiny random weights where the released ones live: the iCD files under their released names
    in $ICDEDIT_HOME, the base in a hub cache as huggingface_hub lays it out."""
    from icdedit.specs import resolve_model
    from icdedit.tiny import build_tiny_model

    tiny = tmp_path / "tiny"
    build_tiny_model(tiny)
    home, hub = tmp_path / "weights", tmp_path / "hf" / "hub"
    env = {"ICDEDIT_HOME": str(home), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    os.environ["ICDEDIT_HOME"] = str(home)  # the released YAML's $ICDEDIT_HOME paths, resolved here
    try:
        spec = resolve_model("sd15-4step-v1")
    finally:
        del os.environ["ICDEDIT_HOME"]
    home.mkdir()
    shutil.copy(tiny / "teacher.pt", spec.teacher)
    shutil.copy(next(tiny.glob("*-forward_*.safetensors")), spec.forward_lora)
    shutil.copy(next(tiny.glob("*-reverse_*.safetensors")), spec.reverse_lora)
    repo = hub / ("models--" + spec.base.replace("/", "--"))
    revision = "0" * 40
    shutil.copytree(tiny / "base", repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return env


def test_the_first_command_runs_as_written_with_the_weights_in_place(tmp_path):
    """The Set-up section's first command, with nothing changed, on the released model's paths."""
    setup = (ROOT / "README.md").read_text().split("## Set up", 1)[1]
    first = re.search(r"```bash\n(.*?)\n", setup).group(1)
    assert first.startswith("make install && .venv/bin/icdedit edit examples/")
    args = without_comment(first.split("&& .venv/bin/", 1)[1])
    assert "--model" not in args and "-m" not in args  # the default model, as a new user runs it
    env = stand_in_weights(tmp_path)
    folder = clone_folder(tmp_path)
    assert run_commands([args], folder, env) == [0]
    outputs = [p for p in folder.iterdir() if p.suffix == ".png"]
    assert len(outputs) == 1
    with Image.open(outputs[0]) as image, Image.open(folder / args[2]) as photo:
        assert image.size == photo.size
