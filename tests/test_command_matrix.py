"""Every command through the public CLI, with the same checks for each: `--json` prints one JSON
line with the command's keys (exit 0); a bad input is one `error: ... (hint: ...)` line on stderr,
nothing on stdout, exit 1 (IcdEditError) or 2 (a usage error, Click's own too); with `--json` a
failure is also one JSON object on stdout (error, hint, exit_code); an existing output is refused,
its bytes untouched, unless `--overwrite` (the README: "No output is ever overwritten without
`--overwrite`"). Tiny models on the CPU at 64 px; one inversion serves reconstruct and edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import (
    assert_clean_error,
    batch_args,
    edit_args,
    generate_args,
    invert_args,
    make_photo,
    one_json_object,
    run,
    tiny_args,
)

PROMPT, TARGET = "a photo of a cat", "a photo of a dog"
PROMPTS = ["--src", PROMPT, "--tgt", TARGET]  # a batch's prompts for every item

# -- the commands that write: how to run each into OUT, what --json holds, one output or a folder --
WRITERS = {
    "invert": lambda place, out: invert_args(place / "photo.png", PROMPT, out),
    "reconstruct": lambda place, out: ["reconstruct", place / "inversion.safetensors", "-o", out, *tiny_args()],
    "edit": lambda place, out: edit_args(place / "inversion.safetensors", None, TARGET, out),
    "edit --grid": lambda place, out: edit_args(
        place / "inversion.safetensors", None, TARGET, out, extra=["--grid", "guidance=5,10"]
    ),
    "batch": lambda place, out: batch_args([place / "photos"], out, extra=PROMPTS),
    "generate": lambda place, out: generate_args("a fox", extra=["-o", out]),
    "generate --prompts": lambda place, out: generate_args(extra=["--prompts", place / "prompts.txt", "--out", out]),
    "eval": lambda place, out: ["eval", place / "pairs.csv", "--metrics", "psnr,ssim,mse", "-o", out],
}
OUTPUT_NAME = {  # a file for -o, a folder (ending in /) for --out
    "invert": "latent.safetensors",
    "reconstruct": "rec.png",
    "edit": "edit.png",
    "edit --grid": "grid.png",
    "batch": "edits/",
    "generate": "fox.png",
    "generate --prompts": "generated/",
    "eval": "metrics.csv",
}
RESUMABLE = {"batch", "generate --prompts"}  # a folder with results.jsonl: done items are skipped
BATCH_KEYS = {"command", "report", "done", "skipped", "failed", "seconds", "interrupted", "seconds_per_item"}
KEYS = {
    "invert": {"command", "output", "model", "prompt", "seed", "latent_shape", "processed_size", "original_size"},
    "reconstruct": {"command", "output", "model", "prompt", "seed", "guidance", "tau", "size", "seconds"},
    "edit": {"command", "outputs", "model", "src", "targets", "seed", "settings", "words", "size", "seconds"},
    "edit --grid": {"command", "outputs", "model", "src", "targets", "seed", "grid"},
    "batch": BATCH_KEYS,
    "generate": {"command", "outputs", "prompt", "seeds", "model", "size", "guidance", "tau", "images", "seconds"},
    "generate --prompts": BATCH_KEYS,
    "eval": {"command", "csv", "metrics", "summary", "items", "failed"},
}


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """The inputs: a photo, a folder of one photo, a prompt file, a pairs file for eval, and one
    inversion of the photo, which reconstruct, edit and edit --grid decode."""
    root = tmp_path_factory.mktemp("matrix")
    make_photo(96, 64).save(root / "photo.png")
    (root / "photos").mkdir()
    make_photo(64, 64, seed=1).save(root / "photos" / "a.png")
    make_photo(96, 64, seed=2).save(root / "other.png")  # an "edit" of the photo: its size
    (root / "prompts.txt").write_text("a fox\n")
    (root / "pairs.csv").write_text(f"source,edit,tgt\n{root / 'photo.png'},{root / 'other.png'},{TARGET}\n")
    result = run(*invert_args(root / "photo.png", PROMPT, root / "inversion.safetensors"), "--json")
    assert result.exit_code == 0, result.output
    return root


def output_of(place, command):
    """The output path a command's case writes to (in a folder of its own)."""
    name = OUTPUT_NAME[command]
    folder = place / ("out-" + command.replace(" ", "").replace("--", "-"))
    folder.mkdir(exist_ok=True)
    return folder / name.rstrip("/")


def written(out):
    """The files a case wrote: everything in its folder (a grid's cells and sheet, a batch's images
    and results.jsonl)."""
    folder = out if out.is_dir() else out.parent
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def first_runs(place):
    """Each writing command run once with --json into its own folder, run when first asked for."""
    done = {}

    def first_run(command):
        if command not in done:
            out = output_of(place, command)
            done[command] = run(*WRITERS[command](place, out), "--json"), out
        return done[command]

    return first_run


# -- --json ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", list(WRITERS))
def test_json_is_one_object_with_the_commands_keys(first_runs, command):
    result, out = first_runs(command)
    report = one_json_object(result, KEYS[command])
    assert report["command"] == command.split()[0]
    named = [report.get(key) for key in ("output", "csv", "report")] + report.get("outputs", [])
    named = [name for name in named if name is not None]
    assert named and all(Path(name).is_file() for name in named), named  # what it says it wrote is there


def test_models_json_is_one_object_listing_every_model():
    report = one_json_object(run("models", "--json"), {"command", "models"})
    assert report["command"] == "models"
    names = {m["model"] for m in report["models"]}
    assert {"sd15-4step-v1", "sd15-3step", "sdxl-4step-v2", "sdxl-3step", "tiny", "tiny-xl"} <= names
    assert all({"model", "ready", "parts"} <= set(m) for m in report["models"])


def test_presets_json_is_one_object_of_the_presets():
    report = one_json_object(run("presets", "--json"), {"command", "presets"})
    assert report["command"] == "presets" and {"default", "xl-default"} <= set(report["presets"])
    assert {"guidance", "tau", "cross_replace", "self_replace", "method"} <= set(report["presets"]["default"])


def test_download_json_of_a_model_with_nothing_to_fetch():
    report = one_json_object(run("download", "tiny", "--json"), {"command", "model", "placed"})
    assert report["command"] == "download" and report["model"] == "tiny" and report["placed"] == []


# -- existing outputs ----------------------------------------------------------------------------------
def decoy(files):
    """Replace every file with bytes no command writes; returns what each now holds."""
    contents = {}
    for path in files:
        contents[path] = b"not to be overwritten: " + path.name.encode()
        path.write_bytes(contents[path])
    return contents


@pytest.mark.parametrize("command", list(WRITERS))
def test_an_existing_output_is_kept_unless_overwrite(place, first_runs, command):
    result, out = first_runs(command)
    assert result.exit_code == 0, result.output
    files = [p for p in written(out) if p.name != "results.jsonl" and p.suffix != ".lock"]  # the record: what is done
    before = decoy(files)
    again = run(*WRITERS[command](place, out), "--json")
    if command in RESUMABLE:  # resume checks a recorded output: one that is no longer its image is made again
        report = one_json_object(again, BATCH_KEYS)
        assert report["done"] and report["failed"] == {}
        assert all(p.read_bytes() != before[p] for p in files)
        return
    else:
        assert_clean_error(again, "already exists", "--overwrite", hint=True)
        failure = json_error(again, 1)
        assert "already exists" in failure["error"] and "--overwrite" in failure["hint"]
    assert {p: p.read_bytes() for p in files} == before
    forced = run(*WRITERS[command](place, out), "--overwrite", "--json")
    one_json_object(forced, KEYS[command])
    assert all(p.read_bytes() != before[p] for p in files)  # --overwrite replaces each of them


@pytest.mark.parametrize("command", sorted(RESUMABLE))
def test_a_folder_run_keeps_a_file_it_did_not_record(place, first_runs, command):
    result, out = first_runs(command)
    assert result.exit_code == 0, result.output
    files = [p for p in written(out) if p.name != "results.jsonl" and p.suffix != ".lock"]
    (out / "results.jsonl").unlink()
    before = decoy(files)
    again = run(*WRITERS[command](place, out), "--json")
    assert again.exit_code in (0, 1), again.output
    assert {p: p.read_bytes() for p in files} == before


# -- bad input: one line, the exit code ----------------------------------------------------------------
def bad_inputs(place):
    photo, latent = place / "photo.png", place / "inversion.safetensors"
    return {
        # IcdEditError: exit 1
        "invert missing photo": (invert_args(place / "nophoto.png", PROMPT, place / "x.safetensors"), 1, "nophoto"),
        "reconstruct photo without prompt": (["reconstruct", photo, *tiny_args()], 1, "prompt"),
        "edit latent from nowhere": (edit_args(place / "none.safetensors", None, TARGET), 1, "none.safetensors"),
        "download offline": (["download", "taesd"], 1, "HF_HUB_OFFLINE"),
        "generate empty prompt": (generate_args(""), 1, "icdedit generate '"),  # its hint: what generate takes
        # a value the tool cannot take: exit 2
        "invert size": (invert_args(photo, PROMPT, size=65), 2, "--size 65"),
        "edit guidance": (edit_args(latent, None, TARGET, extra=["--guidance", "nan"]), 2, "guidance"),
        "edit --grid value": (edit_args(latent, None, TARGET, extra=["--grid", "guidance=5,x"]), 2, "--grid"),
        "batch shard": (batch_args([place / "photos"], place / "b", extra=[*PROMPTS, "--shard", "3/2"]), 2, "--shard"),
        "generate width": (generate_args("a fox", width=65), 2, "--width 65"),
        "generate num": (generate_args("a fox", extra=["--num", "0"]), 2, "--num 0"),
        "generate --prompts missing": (generate_args(extra=["--prompts", place / "no.txt"]), 2, "no.txt"),
        "eval metric": (["eval", place / "pairs.csv", "--metrics", "nosuch"], 2, "nosuch"),
        "eval missing input": (["eval", place / "nothing", "--metrics", "psnr"], 2, "nothing"),
        "ui device": (["ui", *tiny_args(), "--device", "quantum"], 2, "quantum"),
        "ui dtype": (["ui", "--model", "tiny", "--dtype", "fp99"], 2, "fp99"),
        # names the tool does not know: exit 2, with the closest known name
        "download unknown model": (["download", "nosuchmodel"], 2, "unknown model"),
        "ui unknown model": (["ui", "--model", "nosuchmodel"], 2, "unknown model"),
        "edit misspelt model": (edit_args(photo, PROMPT, TARGET, model="tinyy"), 2, "did you mean 'tiny'?"),
        "edit misspelt preset": (edit_args(latent, None, TARGET, extra=["--preset", "strng"]), 2, "'strong'?"),
        "edit unknown preset": (edit_args(latent, None, TARGET, extra=["--preset", "fast"]), 2, "known presets"),
        # a grid axis the switch method does not read
        "edit --grid switch": (
            edit_args(photo, PROMPT, TARGET, model="tiny-xl", extra=["--grid", "cross_replace=0.2,0.4"]),
            2,
            "every cell would be the same",
        ),
    }


BAD = list(bad_inputs(Path(".")))  # the cases' names


class ServerStarted(Exception):
    """Raised in place of starting Gradio's server: no test may start one."""


@pytest.fixture
def no_server(monkeypatch):
    import gradio

    def launch(*args, **kwargs):
        raise ServerStarted

    monkeypatch.setattr(gradio.Blocks, "launch", launch)


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_with_the_exit_code(place, no_server, case):
    args, code, fragment = bad_inputs(place)[case]
    before = sorted(p.name for p in place.iterdir())
    result = run(*args)
    assert not isinstance(result.exception, ServerStarted)
    assert_clean_error(result, fragment, folder=place, before=before, code=code, hint=True)
    assert result.stdout == ""


def test_ui_refuses_an_impossible_port_and_upload_limit(no_server):
    result = run("ui", "--model", "tiny", "--device", "cpu", "--port", "-5", "--max-upload-mb", "0")
    assert not isinstance(result.exception, ServerStarted), "the server would have started"
    assert_clean_error(result, code=2)


# Click's own parsing: a value of the wrong type, an unknown option, a missing argument
CLICK_USAGE = {
    "ui port not a number": ["ui", "--port", "x"],
    "reconstruct seed not a number": ["reconstruct", "photo.png", "--seed", "x"],
    "models unknown option": ["models", "--bogus"],
    "presets unknown option": ["presets", "--bogus"],
    "edit without --tgt": ["edit", "photo.png", "--src", "a cat"],
    "no such command": ["frobnicate"],
}


@pytest.mark.parametrize("case", list(CLICK_USAGE))
def test_click_usage_errors_are_one_line_with_exit_2(no_server, case):
    result = run(*CLICK_USAGE[case])
    assert_clean_error(result, code=2, hint=True)
    assert result.stdout == ""


def test_a_misspelt_command_is_suggested():
    assert_clean_error(run("edti"), "no such command 'edti'", "did you mean 'edit'?", code=2)


# -- --json: a failure is one JSON object on stdout too --------------------------------------------------
def json_error(result, code: int) -> dict:
    """The failure's JSON object on stdout (one line): error, hint and exit_code, as the exit code."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    failure = json.loads(lines[0])
    assert {"error", "hint", "exit_code"} <= set(failure) and failure["exit_code"] == code, failure
    return failure


JSON_FAILURES = {  # case -> exit code, a fragment of the error
    "invert missing photo": (1, "nophoto"),
    "edit misspelt model": (2, "unknown model"),
    "generate width": (2, "--width 65"),
    "eval metric": (2, "nosuch"),
}


@pytest.mark.parametrize("case", list(JSON_FAILURES))
def test_a_json_failure_is_one_object_on_stdout(place, no_server, case):
    args, _, _ = bad_inputs(place)[case]
    code, fragment = JSON_FAILURES[case]
    result = run(*args, "--json")
    assert_clean_error(result, fragment, code=code, hint=True)  # stderr keeps its one line
    failure = json_error(result, code)
    assert fragment in failure["error"] and failure["hint"]


def test_a_json_click_usage_error_is_one_object(no_server):
    result = run("edit", "photo.png", "--src", "a cat", "--json")
    assert_clean_error(result, "--tgt", code=2, hint=True)
    assert "--tgt" in json_error(result, 2)["error"]


def test_a_json_batch_input_lists_every_problem(place, tmp_path):
    manifest = tmp_path / "edits.csv"
    manifest.write_text("imgae,src,tgt\nnone.png,a cat,a dog\n")
    result = run(*batch_args([manifest], tmp_path / "out"), "--json")
    failure = json_error(result, 2)
    assert len(failure["problems"]) >= 2, failure  # the misspelt column and the missing image column
    assert any("did you mean 'image'?" in problem for problem in failure["problems"]), failure
