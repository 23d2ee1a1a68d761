"""`icdedit batch`: manifests, folders, resume, failures, kills and shards, on the tiny model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from icdedit.cli import app
from icdedit.errors import SettingsError
from icdedit.manifests import (
    BatchDefaults,
    ManifestError,
    build_items,
    expand_images,
    parse_shard,
    read_manifest,
    take_shard,
    unused_cells_note,
)
from icdedit.word_args import parse_blend

from .helpers import make_photo, run

runner = CliRunner()

ROWS = [
    {"image": "a.png", "src": "a photo of a cat", "tgt": "a photo of a dog"},
    {"image": "b.png", "src": "a photo of a cat", "tgt": "a red photo of a cat", "seed": 3},
    {"image": "c.png", "src": "a photo of a dog", "tgt": "a photo of a bear", "blend": "dog bear", "guidance": 7},
]


@pytest.fixture
def photos(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(["a.png", "b.png", "c.png", "d.png"]):
        make_photo(64 + 32 * (i % 2), 64, seed=i).save(folder / name)
    return folder


def write_manifest(path: Path, rows: list[dict]) -> Path:
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        keys = sorted({k for r in rows for k in r})
        sep = "\t" if suffix == ".tsv" else ","
        lines = [sep.join(keys)] + [sep.join(str(r.get(k, "")) for k in keys) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(yaml.safe_dump(rows))
    return path


def records(out: Path, name="results.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


# -- parsing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".yaml"])
def test_every_manifest_format_reads_the_same_items(tmp_path, suffix):
    rows = read_manifest(write_manifest(tmp_path / f"m{suffix}", ROWS))
    items = build_items(rows, tmp_path, tmp_path / "out", BatchDefaults())
    assert [i.image.name for i in items] == ["a.png", "b.png", "c.png"]
    assert items[1].seed == 3 and items[0].seed == 0
    assert items[2].blend == [("dog", "bear")] and items[2].settings.guidance == 7
    assert items[0].settings.guidance == 19 and items[0].output == tmp_path / "out" / "0001-a-a-photo-of-a-dog.png"


def test_pie_bench_csv_is_accepted_as_it_is(tmp_path):
    (tmp_path / "pie.csv").write_text(
        "file_name,old_caption,edited_caption,blended_words\n"
        "000/a.jpg,a cat sitting,a dog sitting,cat dog\n"
        '111/b.jpg,a photo of a house,a photo of a red house," "\n'
    )
    items = build_items(read_manifest(tmp_path / "pie.csv"), tmp_path / "imgs", tmp_path / "out", BatchDefaults())
    assert items[0].image == tmp_path / "imgs" / "000" / "a.jpg"
    assert (items[0].src, items[0].tgt, items[0].blend) == ("a cat sitting", "a dog sitting", [("cat", "dog")])
    assert items[1].blend == []  # a blank blended_words means no local blend, as the official script reads it


def test_a_cell_the_rows_method_would_ignore_fails_the_row_and_outside_methods_only_note_word_cells(tmp_path):
    """One policy with flags and grid axes: a row that names its method and a setting that method
    ignores fails (blend_threshold included); a word column (blend, amplify) under a method that
    comes from the command line is noted, since dataset manifests carry it on every row."""
    cat = {"src": "a photo of a cat", "tgt": "a photo of a dog"}
    rows = [
        {"image": "a.png", **cat, "method": "switch", "blend_threshold": 0.5},
        {"image": "b.png", **cat, "method": "switch", "blend": "cat dog"},
        {"image": "c.png", **cat, "method": "switch", "amplify": "dog=2"},
        {"image": "d.png", **cat, "method": "p2p", "amplify_prompt": "target"},
        {"image": "e.png", **cat, "method": "p2p", "blend_threshold": 0.5, "blend": "cat dog", "amplify": 2},
        {"image": "f.png", **cat, "method": "switch", "amplify_prompt": "target"},
    ]
    items = build_items(rows, tmp_path, tmp_path / "out", BatchDefaults())
    problems = [item.problem for item in items]
    assert problems[0].startswith("blend_threshold cell: ") and "'switch' method (as asked)" in problems[0]
    assert problems[1].startswith("blend cell: ") and problems[2].startswith("amplify cell: ")
    assert "--method p2p (or p2p+switch)" in problems[0] and "which switches no prompts" in problems[3]
    assert problems[4:] == [None, None] and unused_cells_note(rows, items) is None

    outside = [
        {"image": "g.png", **cat, "blend": "cat dog"},
        {"image": "h.png", **cat, "blend_threshold": 0.5},
        {"image": "i.png", **cat, "amplify": 4},
        {"image": "j.png", **cat, "cross_replace": 0.5},
    ]
    items = build_items(outside, tmp_path, tmp_path / "out", BatchDefaults(overrides={"method": "switch"}))
    problems = [item.problem for item in items]
    assert problems[0] is None and problems[2] is None and items[0].blend is None
    assert problems[1].startswith("blend_threshold cell: ") and problems[3].startswith("cross_replace cell: ")
    note = unused_cells_note(outside, items)
    assert note.startswith("note: the blend/amplify cells of row(s) 1, 3 are not used") and "--method p2p" in note


def test_a_row_with_a_problem_becomes_a_failed_item_with_its_reason(tmp_path):
    rows = [
        {"image": "a.png", "src": "a cat", "tgt": "a dog"},
        {"image": "", "src": "a cat", "tgt": "a dog"},
        {"image": "b.png", "src": "a cat", "tgt": ""},
        {"image": "c.png", "src": "a cat", "tgt": "a dog", "tau": "high"},
        {"image": "d.png", "src": "a cat", "tgt": "a dog", "preset": "nope"},
        {"image": "e.png", "src": "a cat", "tgt": "a dog", "guidance": "nan"},
        {"image": "f.png", "src": "a cat", "tgt": "a dog", "output": "0001-a-a-dog.png"},
        {"image": "g.png", "src": "a cat", "tgt": "a dog", "seed": "-1"},
        {"image": "h.png", "src": "a cat", "tgt": "a dog", "amplify": "dog=inf"},
        {"image": "i.png", "src": "a cat", "tgt": "a dog", "blend": "And chair rock"},
        {"image": "j.png", "src": "a cat", "tgt": "a dog", "blend": "pug dog"},
        {"image": "k.png", "src": "a cat", "tgt": "a dog", "seed": "2.5"},
        {"image": "l.png", "src": "a cat", "tgt": "a dog", "guidance": 10**400},  # float() overflows
        {"image": "m.png", "src": "a cat", "tgt": "a dog", "guidance": "1" + "0" * 400},  # inf
        [1, 2],  # a JSONL line or YAML item that is not a row
        {"image": "n.png", "src": "a cat", "tgt": "a dog", "output": "0002-b-a-dog.png"},  # row 2 failed: free
    ]
    items = build_items(rows, tmp_path, tmp_path, BatchDefaults())
    problems = {item.number: item.problem for item in items}
    assert problems[1] is None and items[0].settings.guidance == 19
    expected = {
        2: "image is missing",
        3: "src and tgt",
        4: "'high' is not a number",
        5: "unknown preset 'nope'",
        6: "row: guidance = nan is out of range",
        7: "also row 1's",
        8: "seed '-1'",
        9: "'dog=inf'",
        10: "'And chair rock'",
        11: "'pug' is not in the source prompt",
        12: "seed '2.5'",
        13: "is not a number",
        14: "guidance = inf is out of range",
        15: "[1, 2] is not a row of named cells",
    }
    for number, fragment in expected.items():
        assert problems[number] is not None and fragment in problems[number], (number, problems[number])
    assert "--bad-blend ignore" in problems[10] and "--bad-blend ignore" in problems[11]
    assert problems[16] is None  # the output name of a row that fails is not taken


def test_bad_blend_ignore_edits_without_local_blend_and_says_so(tmp_path):
    rows = [
        {"image": "i.png", "src": "a cat", "tgt": "a dog", "blend": "And chair rock"},
        {"image": "j.png", "src": "a cat", "tgt": "a dog", "blend": "pug dog"},
        {"image": "k.png", "src": "a cat", "tgt": "a dog", "amplify": "bear=2", "blend": "pug dog"},
    ]
    items = build_items(rows, tmp_path, tmp_path, BatchDefaults(bad_blend="ignore"))
    for item in items[:2]:
        assert item.problem is None and item.no_blend and item.blend is None and "without local blend" in item.warning
    assert "'bear'" in items[2].problem  # only a blend is set aside, never another problem


@pytest.mark.parametrize(
    "cell, pairs",
    [
        ("cat dog", [("cat", "dog")]),
        ("('cat', 'dog')", [("cat", "dog")]),
        ('["cat", "dog"]', [("cat", "dog")]),
        ("('pug dog', 'bear')", [("pug", "bear"), ("dog", "bear")]),
        (["cat", "dog"], [("cat", "dog")]),
        ([["cat", "dog"], ["grass", "snow"]], [("cat", "dog"), ("grass", "snow")]),
        (" ", None),
        ("", None),
        (None, None),
        ("()", None),
    ],
)
def test_every_blend_form_of_the_manifests_is_read(cell, pairs):
    assert parse_blend(cell) == pairs


@pytest.mark.parametrize(
    "cell", ["And chair rock", "cat", "('cat',)", "('cat', 3)", "(cat, dog", "__import__('os')", "[1, 2]"]
)
def test_an_unparsable_blend_is_a_value_error(cell):
    with pytest.raises(ValueError, match="is not 'SRCWORD TGTWORD'"):
        parse_blend(cell)


def test_problems_of_the_manifest_as_a_whole_are_reported_together(tmp_path):
    rows = [{"file_name": "a.png", "old_caption": "a cat", "edited_captoin": "a dog", "colour": "red"}]
    (tmp_path / "m.csv").write_text("file_name,old_caption,edited_captoin,colour\na.png,a cat,a dog,red\n")
    for given in (rows, read_manifest(tmp_path / "m.csv")):
        with pytest.raises(ManifestError) as info:
            build_items(given, tmp_path, tmp_path, BatchDefaults())
        problems = info.value.problems
        assert len(problems) == 3 and info.value.exit_code == 2
        assert "'edited_captoin' (did you mean 'edited_caption'?)" in problems[0] and "'colour'" in problems[1]
        assert "no tgt column" in problems[2] and "--tgt" in problems[2]
    with pytest.raises(ManifestError, match="no image column"):
        build_items([{"src": "a cat", "tgt": "a dog"}], tmp_path, tmp_path, BatchDefaults())


def test_folders_and_globs_expand_in_order(photos):
    assert [p.name for p in expand_images([str(photos)])] == ["a.png", "b.png", "c.png", "d.png"]
    assert [p.name for p in expand_images([str(photos / "[bc].png"), str(photos / "a.png")])] == [
        "b.png",
        "c.png",
        "a.png",
    ]


def test_shards_partition_the_items_exactly():
    items = list(range(23))
    parts = [take_shard(items, (k, 5)) for k in range(1, 6)]
    assert sorted(x for p in parts for x in p) == items
    assert all(set(a).isdisjoint(b) for i, a in enumerate(parts) for b in parts[i + 1 :])
    assert parts == [take_shard(items, (k, 5)) for k in range(1, 6)]  # deterministic
    assert parse_shard("2/8") == (2, 8) and parse_shard(None) is None
    for bad in ("0/4", "5/4", "x", "1-4"):
        with pytest.raises(SettingsError):
            parse_shard(bad)


# -- running -----------------------------------------------------------------------------------------
def test_folder_with_src_and_tgt_then_resume_does_nothing(photos, tiny_model):
    args = [
        "batch",
        photos,
        "--src",
        "a photo of a cat",
        "--tgt",
        "a photo of a dog",
        "--model",
        tiny_model,
        "--device",
        "cpu",
        "--out",
        "out",
    ]
    first = run(*args, "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert len(summary["done"]) == 4 and summary["failed"] == {}
    out = Path("out")
    assert sorted(p.name for p in out.glob("*.png")) == [
        "0001-a-a-photo-of-a-dog.png",
        "0002-b-a-photo-of-a-dog.png",
        "0003-c-a-photo-of-a-dog.png",
        "0004-d-a-photo-of-a-dog.png",
    ]
    assert Image.open(out / "0002-b-a-photo-of-a-dog.png").size == (96, 64)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    again = run(*args, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == [1, 2, 3, 4]
    assert json.loads(again.stdout)["done"] == []
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps
    redo = json.loads(run(*args, "--json", "--overwrite").stdout)
    assert redo["done"] == [1, 2, 3, 4]
    lines = records(out)
    assert [r["item"] for r in lines] == [1, 2, 3, 4] and all(r["status"] == "done" for r in lines)
    assert {"image", "src", "tgt", "settings", "output", "seconds", "status", "words"} <= set(lines[0])


@pytest.mark.parametrize("batch_size", ["1", "4"])
def test_a_bad_item_is_recorded_and_the_rest_succeed(photos, tiny_model, batch_size):
    (photos / "b.png").write_bytes((photos / "b.png").read_bytes()[:200])  # corrupt
    rows = ROWS + [
        {"image": "d.png", "src": "a photo of a cat", "tgt": "a photo of a dog", "blend": "pug dog"},
        {"image": "missing.png", "src": "a cat", "tgt": "a dog"},
        {"image": "a.png", "src": "a photo of a cat", "tgt": "a photo of a lion"},
    ]
    manifest = write_manifest(photos / "m.csv", rows)
    result = run(
        "batch",
        manifest,
        "--model",
        tiny_model,
        "--device",
        "cpu",
        "--out",
        "out",
        "--json",
        "--batch-size",
        batch_size,
    )
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["done"] == [1, 3, 6]
    assert set(summary["failed"]) == {"2", "4", "5"}
    assert (
        "damaged" in summary["failed"]["2"]
        and "'pug'" in summary["failed"]["4"]
        and "not found" in summary["failed"]["5"]
    )
    by_item = {r["item"]: r for r in records(Path("out"))}
    assert by_item[2]["status"] == "failed" and "b.png" in by_item[2]["error"]
    assert by_item[6]["status"] == "done" and Path(by_item[6]["output"]).is_file()
    assert not list(Path("out").glob("*.part*")) and not list(Path("out").glob(".*"))


def test_unusable_manifest_exits_2_before_loading_any_model(photos):
    manifest = write_manifest(photos / "m.jsonl", [{"image": "a.png", "src": "a cat", "tgtt": "a dog"}])
    result = run("batch", manifest, "--images", photos / "nowhere", "--model", "does-not-exist", "--out", "out")
    assert result.exit_code == 2
    assert "--images folder" in result.stderr and "nowhere" in result.stderr and "does not exist" in result.stderr
    assert "unknown column 'tgtt' (did you mean 'tgt'?)" in result.stderr and "Traceback" not in result.output
    assert not Path("out").exists()


def test_batch_equals_edit_item_by_item(photos, tiny_model):
    manifest = write_manifest(photos / "m.yaml", ROWS)
    assert run("batch", manifest, "--model", tiny_model, "--device", "cpu", "--out", "out").exit_code == 0
    for number, row in enumerate(ROWS, start=1):
        args = [
            "edit",
            photos / row["image"],
            "--src",
            row["src"],
            "--tgt",
            row["tgt"],
            "--model",
            tiny_model,
            "--device",
            "cpu",
            "--seed",
            row.get("seed", 0),
            "-o",
            f"single{number}.png",
        ]
        if "blend" in row:
            args += ["--blend", *row["blend"].split()]
        if "guidance" in row:
            args += ["--guidance", row["guidance"]]
        assert run(*args).exit_code == 0
        batch_out = next(Path("out").glob(f"{number:04d}-*.png"))
        assert np.array_equal(np.asarray(Image.open(batch_out)), np.asarray(Image.open(f"single{number}.png")))


def test_shards_under_the_cli_cover_everything_once(photos, tiny_model):
    common = [
        "batch",
        photos,
        "-s",
        "a photo of a cat",
        "-t",
        "a photo of a dog",
        "-m",
        tiny_model,
        "--device",
        "cpu",
        "--out",
        "out",
        "--json",
    ]
    a = json.loads(run(*common, "--shard", "1/2").stdout)
    b = json.loads(run(*common, "--shard", "2/2").stdout)
    assert a["done"] == [1, 3] and b["done"] == [2, 4]
    assert (Path("out") / "results-shard-1-of-2.jsonl").is_file() and (
        Path("out") / "results-shard-2-of-2.jsonl"
    ).is_file()


def test_torchrun_environment_picks_the_ranks_shard(photos, tiny_model, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    result = run(
        "batch",
        photos,
        "-s",
        "a photo of a cat",
        "-t",
        "a photo of a dog",
        "-m",
        tiny_model,
        "--device",
        "cpu",
        "--out",
        "out",
        "--json",
    )
    assert json.loads(result.stdout)["done"] == [2, 4]


def test_a_killed_run_resumes_and_completes_every_item_exactly_once(tmp_path, tiny_model):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):
        make_photo(64, 64, seed=i).save(folder / f"p{i}.png")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "icdedit",
        "batch",
        str(folder),
        "-s",
        "a photo of a cat",
        "-t",
        "a photo of a dog",
        "-m",
        str(tiny_model),
        "--device",
        "cpu",
        "--size",
        "256",
        "--out",
        str(out),
        "--json",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "results.jsonl").is_file() and (out / "results.jsonl").read_text().count('"done"') >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = [r for r in records(out) if r["status"] == "done"]
    assert 2 <= len(first) < 8, "the kill should land mid-way"
    for r in first:  # whatever is recorded done is a complete image
        assert Image.open(r["output"]).size == (64, 64)
    resumed = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    summary = json.loads(resumed.stdout)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(summary["skipped"]) == sorted(r["item"] for r in first)
    assert sorted(summary["done"] + summary["skipped"]) == list(range(1, 9))
    assert len(set(summary["done"]) & set(summary["skipped"])) == 0
    final = records(out)
    assert [r["item"] for r in final] == list(range(1, 9)) and all(r["status"] == "done" for r in final)
    assert len(list(out.glob("*.png"))) == 8
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # a killed write's temp file is gone


def test_batch_size_groups_photos_of_one_size_with_the_same_results(photos, tiny_model):
    common = [
        "batch",
        photos,
        "-s",
        "a photo of a cat",
        "-t",
        "a photo of a dog",
        "-m",
        tiny_model,
        "--device",
        "cpu",
        "--json",
    ]
    one = json.loads(run(*common, "--out", "one").stdout)
    grouped = run(*common, "--out", "grouped", "--batch-size", "3")
    assert grouped.exit_code == 0, grouped.output
    assert json.loads(grouped.stdout)["done"] == one["done"] == [1, 2, 3, 4]
    for a in sorted(Path("one").glob("*.png")):
        x, y = np.asarray(Image.open(a), dtype=int), np.asarray(Image.open(Path("grouped") / a.name), dtype=int)
        assert np.abs(x - y).max() <= 1  # batch round-off may move a pixel by one level
    assert run(*common, "--out", "bad", "--batch-size", "0").exit_code == 2


# -- the official iCD benchmark manifests' layouts (running/benchmarks/instructions/), own rows ------------
OFFICIAL_LAYOUTS = {
    # editing_pie_bench_140.csv: pandas' index as an unnamed first column, ' ' for no blend
    "pie_bench_140.csv": (
        ",file_name,old_caption,edited_caption,blended_words\n"
        "0,000/a.png,a cat sitting on the grass,a dog sitting on the grass,cat dog\n"
        "1,b.png,a photo of a house,a photo of a red house, \n"
        "2,missing.png,a cat on the grass,a dog on the grass,cat dog\n"
        "3,b.png,a cat on the grass,a cat on the snow,puppy puppy\n"
    ),
    # editing_pie_bench_all.csv: the columns in another order, a blend of three words
    "pie_bench_all.csv": (
        ",edited_caption,old_caption,file_name,blended_words\n"
        "0,a dog sitting on the grass,a cat sitting on the grass,000/a.png,cat dog\n"
        '1,"a woman in a blue car, smiling","a woman in a red car, smiling",b.png,And red blue\n'
    ),
    # editing_coco.csv: two unnamed index columns, the blend as a Python tuple
    "coco.csv": (
        ",Unnamed: 0,file_name,old_caption,edited_caption,blended_words\n"
        "0,0,000/a.png,A cat sitting on the grass.,A lion sitting on the grass.,\"('cat', 'lion')\"\n"
        "1,1,b.png,a man with a hat,a woman with a hat,\"('man', 'woman')\"\n"
    ),
}


@pytest.fixture
def official_layouts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images" / "000").mkdir(parents=True)
    make_photo(64, 64, seed=1).save(tmp_path / "images" / "000" / "a.png")
    make_photo(64, 64, seed=2).save(tmp_path / "images" / "b.png")
    for name, text in OFFICIAL_LAYOUTS.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("bad_blend", ["fail", "ignore"])
def test_the_official_manifest_layouts_run_as_they_are(official_layouts, tiny_model, bad_blend):
    outcomes = {}
    for name in OFFICIAL_LAYOUTS:
        result = run(
            "batch",
            name,
            "--images",
            "images",
            "--out",
            f"out-{name}",
            "-m",
            tiny_model,
            "--device",
            "cpu",
            "--json",
            "--bad-blend",
            bad_blend,
        )
        assert "Traceback" not in result.output
        lines = records(Path(f"out-{name}"))
        assert [r["item"] for r in lines] == list(range(1, len(OFFICIAL_LAYOUTS[name].splitlines())))  # every row
        outcomes[name] = {r["item"]: r for r in lines}
        assert result.exit_code == (1 if any(r["status"] == "failed" for r in lines) else 0), result.output
    pie140, pie_all, coco = outcomes.values()
    assert pie140[1]["status"] == "done" and pie140[1]["words"][0]["blend"] == [["cat"], ["dog"]]
    assert pie140[2]["status"] == "done" and pie140[2]["tgt"] == "a photo of a red house"
    assert pie140[2]["words"][0]["blend"] == [[], []]  # blank: no local blend, as the official script
    assert pie140[3]["status"] == "failed" and "image not found" in pie140[3]["error"]
    assert pie_all[1]["status"] == "done" and pie_all[1]["src"] == "a cat sitting on the grass"
    assert coco[1]["status"] == coco[2]["status"] == "done"
    assert coco[1]["words"][0]["blend"] == [["cat"], ["lion"]] and coco[2]["words"][0]["blend"] == [["man"], ["woman"]]
    unusable = {"puppy": pie140[4], "And red blue": pie_all[2]}  # a word not in its prompt; three words
    for fragment, record in unusable.items():
        if bad_blend == "fail":
            assert (
                record["status"] == "failed" and fragment in record["error"] and "--bad-blend ignore" in record["error"]
            )
        else:
            assert (
                record["status"] == "done"
                and fragment in record["warning"]
                and "without local blend" in record["warning"]
            )
            assert record["words"][0]["blend"] == [[], []] and Path(record["output"]).is_file()


def test_the_report_appends_a_line_per_item_and_survives_a_cut_off_line(tmp_path):
    """Appending keeps long runs linear; a killed run's half-written last line is ignored (that
    item is redone) and the next line starts afresh; compacting leaves one line per item."""
    from types import SimpleNamespace

    from icdedit.batch import Report

    def item(number, key="k"):
        return SimpleNamespace(number=number, key=key, output=tmp_path / f"{number}.png", describe=lambda: {})

    path = tmp_path / "results.jsonl"
    report = Report(path)
    report.record(item(1), "failed", error="x")
    report.record(item(1), "done")
    assert len(path.read_text().splitlines()) == 2  # appended, not rewritten
    assert Report(path).records[1]["status"] == "done"  # the later line wins
    with open(path, "a") as handle:
        handle.write('{"item": 2, "key": "k", "sta')  # killed mid-line
    again = Report(path)
    assert set(again.records) == {1}
    again.record(item(3), "done")
    assert set(Report(path).records) == {1, 3}
    again.compact()
    assert [json.loads(line)["item"] for line in path.read_text().splitlines()] == [1, 3]


def test_a_batch_of_more_photos_than_the_inversion_cache_holds(tmp_path, monkeypatch, tiny_model):
    """Ten distinct photos in one UNet batch: each keeps its own inversion (the cache of recent
    inversions holds eight)."""
    from icdedit.batch import InversionCache

    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    for i in range(10):
        make_photo(64, 64, seed=i).save(tmp_path / "photos" / f"p{i}.png")
    assert InversionCache().size < 10
    result = runner.invoke(
        app,
        ["batch", "photos", "-m", str(tiny_model), "--src", "a cat", "--tgt", "a dog", "--out", "out",
         "--batch-size", "10", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["done"] == list(range(1, 11))
