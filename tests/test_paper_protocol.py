"""The paper's protocol (issue 25): `--words official` against the launcher's own rules
(tests/official_words.py) on every row of the official manifests, `--preset paper` on the tiny
model against the official-style reference, and `--dry-run` (no model; the plan the run records)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import tomllib
import torch

from icdedit import manifests
from icdedit.p2p.launcher_words import STOP_WORDS_FILE, nltk_stop_words
from icdedit.presets import load_preset
from icdedit.values import EditJob

from .helpers import P2P_SIZE, make_photo, run
from .official_words import NLTK_ENGLISH, OFFICIAL_MANIFESTS, launcher_words, read_official_rows
from .test_p2p import reference_runs
from .tolerance import assert_near_exact

ROOT = Path(__file__).resolve().parent.parent

# Rows that exercise each rule: (src, tgt, blend cell). The paper's amplify factor is 4.
PROTOCOL_ROWS = [
    # no blend (PIE-Bench's one-space cell); refine; `The` is not NLTK's `the` (compared as written)
    ("a photo of a cat on the grass", "The photo of a cat sitting on the grass", " "),
    # the only new word is a stop word: nothing amplified (auto amplifies `in`); replace mode
    ("a photo of a cat on the grass", "a photo of a cat in the grass", "cat cat"),
    # a new word twice: listed twice; refine
    ("a photo of a cat on the grass", "a red cat and a red dog on the grass", "cat dog"),
    # punctuation kept: `grass,` is a new word, `grass` is not
    ("a photo of a cat on the grass", "a photo of a cat on the grass, at night", "cat cat"),
    # replace mode with a blend and one amplified word
    ("a photo of a cat on the grass", "a photo of a dog on the grass", "cat dog"),
]


def paper_items(rows: list[dict], spec, bad_blend: str = "fail", preset: str = "paper") -> list:
    defaults = manifests.BatchDefaults(preset=preset, bad_blend=bad_blend, model=spec)
    return manifests.build_items(rows, Path("images"), Path("out"), defaults)


def blend_usable(src: str, tgt: str, blend) -> bool:
    """Whether the launcher's blend words are in their prompts (else icdedit fails the row or,
    with --bad-blend ignore, edits it without blend; the launcher's mask would lack that side)."""
    return blend is None or (blend[0][0] in src.split(" ") and blend[1][0] in tgt.split(" "))


def test_the_shipped_stop_words_are_nltks_179_english_words_and_ship_in_the_package():
    assert len(NLTK_ENGLISH) == 179 and nltk_stop_words() == frozenset(NLTK_ENGLISH)
    assert STOP_WORDS_FILE.is_relative_to(ROOT / "icdedit")  # package data: the wheel and sdist take icdedit/
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]
    assert "icdedit" in build["wheel"]["packages"] and "icdedit" in build["sdist"]["include"]


def test_the_paper_presets_hold_the_launchers_values():
    sd15, xl = load_preset("paper"), load_preset("paper-xl")
    assert (sd15.guidance, sd15.tau, sd15.cross_replace, sd15.self_replace, sd15.amplify) == (19, 0.8, 0.3, 0.6, 4)
    assert (sd15.words, sd15.seed, sd15.method, sd15.blend_threshold, sd15.mode) == ("official", 30, "p2p", 0.3, "auto")
    assert sd15.resize == "512x512"  # load_512
    assert (xl.guidance, xl.tau, xl.amplify_prompt, xl.method) == (19, 0.7, "source", "switch")
    assert (xl.seed, xl.resize) == ("row", "1024x1024")


@pytest.mark.parametrize("bad_blend", ["fail", "ignore"])
@pytest.mark.parametrize("name", OFFICIAL_MANIFESTS)
def test_official_word_rules_equal_the_launchers_on_every_row_of_the_official_manifests(tiny_spec, name, bad_blend):
    rows = read_official_rows(name)
    items = paper_items(rows, tiny_spec, bad_blend)
    assert len(items) == len(rows) > 100
    unusable = 0
    for row, item in zip(rows, items):
        src, tgt = row["old_caption"], row["edited_caption"]
        want = launcher_words(src, tgt, row["blended_words"], 4.0)
        assert (item.settings.words, item.seed) == ("official", 30)
        usable = blend_usable(src, tgt, want.blend_word)
        unusable += not usable
        if not usable and bad_blend == "fail":
            assert item.prepared is None and "--bad-blend ignore" in item.problem, (name, item.number)
            continue
        assert item.problem is None, (name, item.number, item.problem)
        words = item.prepared.words[0]
        assert words.mode == want.mode, (name, item.number)
        assert words.amplify == tuple(zip(want.amplify_words, want.amplify_values)), (name, item.number)
        blend = want.blend_word if usable else None
        assert (words.blend_source, words.blend_target) == (blend or ((), ())), (name, item.number)
    if name == "editing_pie_bench_140.csv":
        assert sum(row["blended_words"] == " " for row in rows) == 16  # the issue's count of rows without blend
    if name == "editing_coco.csv":  # the launcher splits its ('child', 'lion') cells on spaces: never in the prompt
        assert unusable == len(rows)


def test_auto_and_official_differ_where_the_issue_says(tiny_spec):
    rows = [{"image": "a.png", "src": s, "tgt": t, "blend": b} for s, t, b in PROTOCOL_ROWS[:2]]
    official = [item.prepared.words[0] for item in paper_items(rows, tiny_spec)]
    auto = [item.prepared.words[0] for item in paper_items(rows, tiny_spec, preset="default")]
    assert official[0].amplify == (("The", 4.0), ("sitting", 4.0)) and auto[0].amplify == (("sitting", 4.0),)
    assert official[1].amplify == () and auto[1].amplify == (("in", 4.0),)


@pytest.fixture(scope="module")
def protocol_inversions(editor):
    size = P2P_SIZE // 2  # the words are under test, not partial blend masks: a smaller, faster edit
    photo = make_photo(size, size, seed=5)
    return {src: editor.invert(photo, src, seed=30, size=size) for src in {r[0] for r in PROTOCOL_ROWS}}


@pytest.mark.parametrize("index", range(len(PROTOCOL_ROWS)))
def test_paper_preset_edits_equal_the_official_style_reference(
    tiny_spec, editor, ref, ref64, protocol_inversions, index
):
    """The batch row's prepared edit, run by icdedit, against the reference given the launcher's
    words (from tests/official_words.py, not icdedit's): same latents within float32's error."""
    src, tgt, cell = PROTOCOL_ROWS[index]
    (item,) = paper_items([{"image": "a.png", "src": src, "tgt": tgt, "blend": cell}], tiny_spec)
    want = launcher_words(src, tgt, cell, 4.0)
    blend = want.blend_word or ((), ())
    words = SimpleNamespace(
        amplify=tuple(zip(want.amplify_words, want.amplify_values)), blend_source=blend[0], blend_target=blend[1]
    )
    inversion = protocol_inversions[src]
    settings = item.settings
    exact, error = reference_runs(ref, ref64, inversion, src, [tgt], settings, [words])
    got = editor.edit_many([EditJob.prepared(inversion, item.prepared)])[0].latents
    assert_near_exact(got, exact, error, f"paper row {index}")


@pytest.fixture
def protocol_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    lines = ["file_name,old_caption,edited_caption,blended_words"]
    for k, (src, tgt, cell) in enumerate(PROTOCOL_ROWS):
        make_photo(64, 64, seed=k).save(tmp_path / "images" / f"{k}.png")
        quoted = [f'"{value}"' if "," in value else value for value in (src, tgt, cell)]
        lines.append(",".join([f"{k}.png", *quoted]))
    lines.append("missing.png,a photo of a cat,a photo of a dog,puppy dog")  # a row whose blend cannot be used
    (tmp_path / "pie.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def paper_batch(*extra):
    return run("batch", "pie.csv", "--images", "images", "--out", "out", "--preset", "paper", *extra)


def dry_run(*extra):
    return paper_batch("--dry-run", *extra)


def test_dry_run_loads_no_model_and_its_plan_is_what_the_run_records(protocol_manifest, tiny_model, monkeypatch):
    import icdedit.batch
    import icdedit.run_context

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run loaded a model")

    with monkeypatch.context() as patch:
        patch.setattr(icdedit.batch, "load_editor", refuse)
        patch.setattr(icdedit.run_context, "load_model", refuse)
        patch.setattr(torch.nn.Module, "__init__", refuse)  # no network of any kind is built
        result = dry_run("-m", tiny_model, "--size", "64", "--device", "cpu", "--json")
    assert result.exit_code == 1, result.output  # the last row's problem
    assert not Path("out").exists()  # nothing written
    planned = json.loads(result.stdout)["items"]
    assert [p["row"] for p in planned] == list(range(len(PROTOCOL_ROWS) + 1))
    assert "puppy" in planned[-1]["problem"] and planned[-1]["mode"] is None
    for p, (src, tgt, cell) in zip(planned, PROTOCOL_ROWS):
        want = launcher_words(src, tgt, cell, 4.0)
        assert p["problem"] is None and p["mode"] == want.mode and p["seed"] == 30
        assert p["amplify_words"] == list(want.amplify_words) and set(p["amplify"].values()) <= {4.0}
        assert p["blend"] == (None if want.blend_word is None else [list(side) for side in want.blend_word])
        assert p["settings"]["words"] == "official" and p["settings"]["guidance"] == 19

    run_result = dry_run("-m", tiny_model, "--size", "64", "--device", "cpu", "--json")
    assert run_result.exit_code == 1  # the same plan again (not yet run: nothing was written)
    assert json.loads(run_result.stdout)["items"] == planned
    real = paper_batch("-m", tiny_model, "--size", "64", "--device", "cpu")
    assert real.exit_code == 1 and "failed: item 6" in real.output, real.output
    records = {r["item"]: r for r in map(json.loads, Path("out/results.jsonl").read_text().splitlines())}
    assert sorted(records) == [p["row"] + 1 for p in planned], records
    for p in planned:
        record = records[p["row"] + 1]
        if p["problem"]:
            assert record["status"] == "failed" and p["problem"] in record["error"]
            continue
        assert record["status"] == "done", record
        assert (record["seed"], record["settings"], record["output"]) == (p["seed"], p["settings"], p["outputs"][0])
        (words,) = record["words"]
        assert (words["mode"], words["amplify"]) == (p["mode"], p["amplify"])
        assert words["blend"] == (p["blend"] or [[], []])


def test_paper_xl_seeds_each_row_with_its_index_and_squares_photos(tmp_path):
    name = "editing_pie_bench_140.csv"
    (tmp_path / "images").mkdir()
    result = run(
        "batch", ROOT / "tests/data/official" / name, "--images", tmp_path / "images", "--out", tmp_path / "out",
        "--preset", "paper-xl", "-m", "tiny-xl", "--dry-run", "--json",
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # no photos there: each row's problem, its plan all the same
    planned = json.loads(result.stdout)["items"]
    assert all(p["problem"].startswith("image not found") for p in planned)
    assert [p["seed"] for p in planned] == list(range(140))  # row j: seed j, as sdxl/edit.py
    assert all(p["mode"] is None and p["blend"] is None and p["amplify"] == {} for p in planned)  # no P2P
    assert {p["settings"]["resize"] for p in planned} == {"1024x1024"}


def test_resize_squashes_the_photo_before_anything_else(tmp_path):
    from icdedit.plans import EditRequest, plan_edit

    make_photo(96, 64).save(tmp_path / "p.png")
    request = EditRequest(tmp_path / "p.png", ["a dog"], "a cat", model="tiny-xl", preset="paper-xl", seed=None)
    plan = plan_edit(request)
    assert plan.source.image.size == (1024, 1024) and plan.seed == 0  # one edit is row 0
    assert plan_edit(EditRequest(tmp_path / "p.png", ["a dog"], "a cat", model="tiny-xl")).source.image.size == (96, 64)


def test_edit_dry_run_prints_the_plan_without_a_model_or_an_output(tmp_path, tiny_model, monkeypatch):
    import icdedit.run_context
    import icdedit.workflow

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run loaded a model")

    monkeypatch.chdir(tmp_path)
    make_photo(96, 64).save("p.png")
    monkeypatch.setattr(icdedit.workflow, "load_editor", refuse)
    monkeypatch.setattr(icdedit.run_context, "load_model", refuse)
    src, tgt = PROTOCOL_ROWS[2][:2]
    common = ("edit", "p.png", "--src", src, "--tgt", tgt, "-m", tiny_model, "--dry-run")
    result = run(*common, "--preset", "paper", "--json")
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)["items"]
    want = launcher_words(src, tgt, " ", 4.0)  # no blend given: none under the official rules
    assert (item["mode"], item["blend"], item["amplify_words"]) == (want.mode, None, list(want.amplify_words))
    assert item["seed"] == 30 and item["settings"]["words"] == "official" and not Path(item["outputs"][0]).exists()
    auto = run(*common, "--words", "auto", "--json")
    assert json.loads(auto.stdout)["items"][0]["amplify_words"] == ["red", "dog"]  # auto lists a word once
    bad = run(*common, "--words", "nltk")
    assert bad.exit_code == 2 and "auto, official" in bad.output and "Traceback" not in bad.output


def test_a_words_cell_chooses_the_rules_of_its_row_and_a_bad_one_is_the_rows_problem(tiny_spec):
    src, tgt, cell = PROTOCOL_ROWS[1]
    rows = [{"image": "a.png", "src": src, "tgt": tgt, "blend": cell, "words": w} for w in ("auto", "official", "x")]
    auto, official, bad = paper_items(rows, tiny_spec)
    assert auto.settings.words == "auto" and auto.prepared.words[0].amplify == (("in", 4.0),)
    assert official.settings.words == "official" and official.prepared.words[0].amplify == ()
    assert bad.prepared is None and "words = 'x'" in bad.problem and "auto, official" in bad.problem
