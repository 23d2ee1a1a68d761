"""`icdedit eval`: PIE-Bench's metrics as PnPInversion's evaluation computes them, checked
against values worked out by hand on small images and masks; the network metrics on tiny
random models (tests/tiny_eval.py) through the real code path."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from icdedit.errors import ModelError, UsageError
from icdedit.eval_networks import Lpips, Structure, squeezenet_features
from icdedit.evaluation import METRICS, Scorer, check_metrics, decode_rle, summarise
from icdedit.metrics import region_scores

from .helpers import assert_clean_error, make_photo, run
from .tiny_eval import build_tiny_eval_models


@pytest.fixture(scope="session")
def eval_home(tmp_path_factory, tiny_spec) -> Path:
    return build_tiny_eval_models(tmp_path_factory.mktemp("eval-home"), Path(tiny_spec.base) / "tokenizer")


@pytest.fixture
def with_models(monkeypatch, eval_home) -> Path:
    monkeypatch.setenv("ICDEDIT_HOME", str(eval_home))
    return eval_home


def _image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(array * 255).astype(np.uint8), "RGB")


# -- masks ------------------------------------------------------------------------------------------
def test_rle_masks_decode_row_major_with_the_border_set():
    """(start, length) runs over the row-major flattened grid; runs clipped at its end; then the
    one-pixel border is 1, as PnPInversion's mask_decode sets it."""
    mask = decode_rle([6, 3, 18, 5], shape=(4, 5))  # ones at 6, 7, 8 and 18, 19 (clipped)
    interior = np.zeros((4, 5), dtype=np.float32)
    interior.flat[[6, 7, 8, 18, 19]] = 1
    assert mask[1:-1, 1:-1].tolist() == interior[1:-1, 1:-1].tolist() == [[1, 1, 1], [0, 0, 0]]
    assert mask[0].all() and mask[-1].all() and mask[:, 0].all() and mask[:, -1].all()
    assert decode_rle([], shape=(3, 3)).sum() == 8  # everything but the centre is border
    with pytest.raises(ValueError):
        decode_rle([1, 2, 3])


# -- pixel metrics ----------------------------------------------------------------------------------
def test_region_metrics_are_computed_on_both_images_times_one_minus_mask():
    """16 x 16 grey images; the edit adds 0.2 on a 4 x 4 block inside the edited region and 0.1 on
    a 2 x 2 block outside it. Both images are multiplied by 1 - mask, then each metric runs over
    the whole image (zeros included): MSE = 4 x 3 x 0.1^2 / (3 x 256), PSNR = -10 log10 MSE."""
    source = np.full((16, 16, 3), 0.4)
    edit = source.copy()
    edit[2:6, 2:6] += 0.2  # inside the mask: ignored
    edit[10:12, 10:12] += 0.1  # outside: counted
    mask = np.zeros((16, 16), dtype=np.float32)
    mask[1:7, 1:7] = 1
    scores = region_scores(_image(source), _image(edit), mask, ["psnr", "mse", "ssim"])
    step = (np.round(0.5 * 255) - np.round(0.4 * 255)) / 255  # the 0.1 step after uint8 rounding
    mse = 4 * 3 * step**2 / (3 * 256)
    assert scores["mse"] == pytest.approx(mse, rel=1e-5)
    assert scores["psnr"] == pytest.approx(-10 * math.log10(mse), rel=1e-5)
    assert 0 < scores["ssim"] < 1
    same = region_scores(_image(source), _image(source), mask, ["psnr", "mse", "ssim"])
    assert same["mse"] == 0 and same["ssim"] == pytest.approx(1.0) and math.isinf(same["psnr"])
    whole = region_scores(_image(source), _image(edit), None, ["mse"])
    big = (np.round(0.6 * 255) - np.round(0.4 * 255)) / 255
    assert whole["mse"] == pytest.approx((16 * 3 * big**2 + 4 * 3 * step**2) / (3 * 256), rel=1e-5)


def test_an_empty_unedited_region_gives_nan_and_the_summary_skips_it():
    full = np.ones((16, 16), dtype=np.float32)
    scores = region_scores(make_photo(16, 16), make_photo(16, 16, seed=1), full, ["psnr", "ssim"])
    assert all(math.isnan(v) for v in scores.values())
    rows = [{"psnr": 20.0}, {"psnr": math.nan}, {"psnr": 30.0}, {"psnr": math.inf}, {"other": 1.0}]
    assert summarise(rows, ["psnr"]) == {"psnr": {"mean": 25.0, "count": 2}}


# -- network metrics on tiny models -----------------------------------------------------------------
def test_lpips_is_the_squeeze_network_with_torchmetrics_layers(with_models):
    lpips = Lpips(with_models / "eval" / "lpips-squeeze", torch.device("cpu"))
    assert [h.shape[1] for h in lpips.heads] == [64, 128, 256, 384, 384, 512, 512]  # LPIPS's squeeze taps
    a, b = (torch.rand(1, 3, 64, 64) * 2 - 1 for _ in range(2))
    assert lpips(a, a) == 0.0
    assert lpips(a, b) > 0 and lpips(a, b) == pytest.approx(lpips(b, a), rel=1e-6)
    # the value is the explicit sum over taps of the spatial mean of w . (unit-normalised diff)^2
    taps_a, taps_b = lpips.taps(a), lpips.taps(b)
    expected = 0.0
    for fa, fb, head in zip(taps_a, taps_b, lpips.heads):
        na = fa / torch.sqrt(1e-8 + (fa**2).sum(1, keepdim=True))
        nb = fb / torch.sqrt(1e-8 + (fb**2).sum(1, keepdim=True))
        expected += float(torch.einsum("bchw,c->bhw", (na - nb) ** 2, head.flatten()).mean())
    assert lpips(a, b) == pytest.approx(expected, rel=1e-5)
    # the backbone is the checkpoint's, torchvision's key names: features.<layer>.<fire part>
    checkpoint = torch.load(next((with_models / "eval" / "lpips-squeeze").rglob("*.pth")), weights_only=True)
    assert torch.equal(lpips.features[3].squeeze.weight, checkpoint["features.3.squeeze.weight"])
    assert torch.equal(lpips.features[12].expand3x3.bias, checkpoint["features.12.expand3x3.bias"])
    # torchvision's squeezenet1_1 names and shapes (torchvision/models/squeezenet.py), written out
    torchvision_shapes = {
        "0.weight": (64, 3, 3, 3),
        "3.squeeze.weight": (16, 64, 1, 1),
        "3.expand1x1.weight": (64, 16, 1, 1),
        "4.expand3x3.weight": (64, 16, 3, 3),
        "6.squeeze.weight": (32, 128, 1, 1),
        "7.expand3x3.weight": (128, 32, 3, 3),
        "9.squeeze.weight": (48, 256, 1, 1),
        "10.expand1x1.weight": (192, 48, 1, 1),
        "11.squeeze.weight": (64, 384, 1, 1),
        "12.expand3x3.weight": (256, 64, 3, 3),
    }
    state = squeezenet_features().state_dict()
    assert {k: tuple(state[k].shape) for k in torchvision_shapes} == torchvision_shapes
    assert len(state) == 2 + 8 * 3 * 2  # the first conv, eight Fire modules of three convolutions, with biases


def test_structure_reads_the_last_blocks_keys_with_pie_benchs_preprocessing(with_models):
    structure = Structure(with_models / "eval" / "dino-vitb8", torch.device("cpu"))
    grey = Image.new("RGB", (512, 512), (128, 128, 128))
    x = structure._input(grey)
    assert x.shape == (1, 3, 224, 224)  # short side 224
    assert x[0, 0, 0, 0].item() == pytest.approx((128 - 0.485) / 0.229)  # 0..255 through ImageNet's normalisation
    assert structure._input(Image.new("RGB", (1024, 256))).shape == (1, 3, 120, 480)  # long side at most 480
    # the keys are the last block's: its k_proj of its layer-normed input, computed here by hand
    with torch.no_grad():
        x = structure._input(make_photo(512, 512))
        hidden = structure.model(pixel_values=x, output_hidden_states=True).hidden_states[-2]
        last = structure.model.layers[-1] if hasattr(structure.model, "layers") else structure.model.encoder.layer[-1]
        keys = last.attention.k_proj(last.layernorm_before(hidden))[0]
        norms = keys.norm(dim=1)
        by_hand = (keys @ keys.T) / torch.clamp(norms[:, None] * norms[None, :], min=1e-8)
    sim = structure.self_similarity(make_photo(512, 512))
    assert torch.allclose(sim, by_hand, atol=1e-5)
    assert sim.shape == (785, 785)  # CLS + 28 x 28 patches of 8 pixels
    assert torch.allclose(sim.diagonal(), torch.ones(785), atol=1e-5)
    photo, other = make_photo(512, 512), make_photo(512, 512, seed=4)
    assert structure(photo, photo) == 0.0 and structure(photo, other) > 0


def test_scorer_names_region_metrics_by_what_they_cover(with_models):
    photo, edit = make_photo(64, 64), make_photo(64, 64, seed=2)
    mask = np.zeros((64, 64), dtype=np.float32)
    mask[8:40, 8:40] = 1
    scorer = Scorer(list(METRICS))
    masked = scorer.score(photo, edit, "a photo of a cat", mask)
    assert set(masked) == set(METRICS)
    whole = scorer.score(photo, edit, "a photo of a cat", None)
    assert set(whole) == {"psnr_whole", "lpips_whole", "mse_whole", "ssim_whole", "structure", "clip_whole"} | {
        "clip_image",
        "dinov2",
    }
    assert scorer.score(photo, photo, "x", None)["clip_image"] == pytest.approx(1.0, abs=1e-6)
    assert scorer.score(photo, photo, "x", None)["dinov2"] == pytest.approx(1.0, abs=1e-6)
    # CLIP scores by hand from the model's own features: 100 x max(cos, 0); edited = edit x mask
    clip = scorer._loaded["clip-vit-large-patch14"]
    edited_part = Image.fromarray(np.uint8(np.asarray(edit) * mask[:, :, None]))
    for name, image in (("clip_whole", edit), ("clip_edited", edited_part)):
        cosine = float(clip.image(image) @ clip.text("a photo of a cat"))
        assert masked[name] == pytest.approx(100 * max(cosine, 0.0), abs=1e-4)
    assert masked["clip_image"] == pytest.approx(float(clip.image(photo) @ clip.image(edit)), abs=1e-6)
    assert masked["psnr"] > whole["psnr_whole"]  # the edited region no longer counts


def test_metrics_default_to_what_is_on_disk_and_absent_models_are_named(monkeypatch, tmp_path):
    monkeypatch.setenv("ICDEDIT_HOME", str(tmp_path))
    assert check_metrics(None) == ["psnr", "mse", "ssim"]
    with pytest.raises(ModelError, match="icdedit download dino-vitb8"):
        check_metrics(["structure"])
    with pytest.raises(UsageError, match="'sharpness'"):
        check_metrics(["psnr", "sharpness"])


# -- the command ------------------------------------------------------------------------------------
@pytest.fixture
def edited(tmp_path, monkeypatch, tiny_model) -> Path:
    """A batch output folder: two 512 x 512 photos with PIE-Bench-style 12-digit names, edited."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    for i, seed in enumerate((1, 2)):
        make_photo(512, 512, seed=seed).save(tmp_path / "photos" / f"00000000000{i}.png")
    result = run(
        "batch", "photos", "-m", tiny_model, "--src", "a photo of a cat", "--tgt", "a photo of a tiger", "--out", "out"
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "out"


def _mapping(path: Path, stems: list[str]) -> Path:
    path.write_text(
        json.dumps(
            {
                stem: {
                    "image_path": f"0_random_140/{stem}.jpg",
                    "original_prompt": "a photo of a [cat]",
                    "editing_prompt": "a photo of a [tiger]",
                    "mask": [512 * 100 + 100, 200, 512 * 101 + 100, 200],
                }
                for stem in stems
            }
        )
    )
    return path


def test_eval_scores_a_batch_folder_with_pie_bench_masks(edited, with_models):
    mapping = _mapping(edited.parent / "mapping_file.json", ["000000000000", "000000000001"])
    result = run("eval", edited, "--pie-bench", mapping, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["metrics"] == list(METRICS) and report["failed"] == []
    assert {k: v["count"] for k, v in report["summary"].items()} == {m: 2 for m in METRICS}
    item = report["items"][0]
    assert item["source"].endswith("000000000000.png") and item["target"] == "a photo of a tiger"
    with open(report["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and float(rows[1]["psnr"]) == pytest.approx(report["items"][1]["psnr"], rel=1e-5)
    # the mean of the table is the mean of the items
    mean = sum(i["ssim"] for i in report["items"]) / 2
    assert report["summary"]["ssim"]["mean"] == pytest.approx(mean)
    table = run("eval", edited, "--pie-bench", mapping, "--metrics", "psnr,ssim", "-o", "m.csv")
    assert table.exit_code == 0 and "psnr" in table.stdout and "structure" not in table.stdout


def test_eval_finds_a_nested_out_folders_files_from_anywhere(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    make_photo(64, 64).save("a.png")
    args = ["batch", "a.png", "-m", tiny_model, "--src", "a cat", "--tgt", "a dog", "--out", "runs/a"]
    assert run(*args).exit_code == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = run("eval", tmp_path / "runs" / "a", "--metrics", "psnr", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["psnr_whole"]["count"] == 1


def test_eval_without_masks_names_whole_image_metrics(edited, with_models):
    result = run("eval", edited, "--metrics", "psnr,mse,clip_whole,clip_edited", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["metrics"] == ["psnr_whole", "mse_whole", "clip_whole"]
    assert "clip_edited needs masks" in result.stderr


def test_eval_of_explicit_pairs_with_a_mask_image(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_photo(32, 32).save("a.png")
    make_photo(32, 32, seed=3).save("b.png")
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:16] = 255
    Image.fromarray(mask).save("m.png")
    Path("pairs.csv").write_text("source,edit,tgt,mask\na.png,b.png,a photo,m.png\na.png,b.png,a photo,\n")
    result = run("eval", "pairs.csv", "--metrics", "psnr,mse", "--json")
    assert result.exit_code == 0, result.output
    first, second = json.loads(result.stdout)["items"]
    assert "psnr" in first and "psnr_whole" in second and first["psnr"] > second["psnr_whole"]
    assert Path("pairs-metrics.csv").is_file()


def test_items_that_cannot_be_scored_are_reported_and_the_rest_scored(edited, with_models):
    mapping = _mapping(edited.parent / "mapping_file.json", ["000000000000"])  # no entry for ...001
    result = run("eval", edited, "--pie-bench", mapping, "--metrics", "psnr", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["failed"] == [2] and "no entry with a mask for 000000000001" in report["items"][1]["error"]
    assert report["summary"]["psnr"]["count"] == 1
    (edited.parent / "photos" / "000000000000.png").unlink()
    gone = run("eval", edited, "--metrics", "psnr", "-o", "again.csv", "--json")
    assert gone.exit_code == 1 and json.loads(gone.stdout)["failed"] == [1]


@pytest.mark.parametrize(
    ("args", "fragment", "code"),
    [
        (["eval", "."], "has no results.jsonl", 2),
        (["eval", "missing.csv"], "pairs file not found", 2),
        (["eval", "notes.txt"], "neither a folder nor a pairs file", 2),
        (["eval", "bad.csv"], "no edit column", 2),
        (["eval", "bad.csv", "--metrics", "psnr,vibes"], "unknown metric(s) 'vibes'", 2),
        (["eval", "bad.csv", "--metrics", "structure"], "icdedit download dino-vitb8", 1),
        (["eval", "out", "--pie-bench", "nothing.json"], "mapping file not found", 2),
    ],
)
def test_bad_eval_input_is_one_line(tmp_path, monkeypatch, args, fragment, code):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ICDEDIT_HOME", str(tmp_path / "home"))
    Path("notes.txt").write_text("x")
    Path("bad.csv").write_text("source,tgt\na.png,x\n")
    Path("out").mkdir()
    Path("out/results.jsonl").write_text(json.dumps({"status": "done", "image": "a", "output": "b", "tgt": "t"}) + "\n")
    assert_clean_error(run(*args), fragment, code=code)


def test_models_lists_and_download_names_the_evaluation_models(with_models, monkeypatch):
    listing = json.loads(run("models", "--json").stdout)["models"]
    evaluation = {m["model"]: m for m in listing if m["kind"] == "evaluation"}
    assert all(m["ready"] for m in evaluation.values()) and evaluation["dino-vitb8"]["metrics"] == ["structure"]
    monkeypatch.setenv("ICDEDIT_HOME", str(with_models.parent / "empty-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_clean_error(run("download", "dinov2-base"), "HF_HUB_OFFLINE is set", "evaluation model 'dinov2-base'")


def test_one_metric_table_gives_names_directions_models_and_help():
    from icdedit.cli.options import PICK_HELP, SCORE_HELP
    from icdedit.eval_models import EVAL_MODELS
    from icdedit.grid import PickRule
    from icdedit.metrics import TABLE, psnr, ssim

    assert METRICS == tuple(TABLE)
    for metric in TABLE.values():
        assert metric.model is None or metric.name in EVAL_MODELS[metric.model].metrics
        assert PickRule(metric.name).describe() == f"{'lowest' if metric.lower_is_better else 'highest'} {metric.name}"
        assert (metric.name in SCORE_HELP) != metric.needs_mask  # a grid has no mask
    assert "lowest for structure, lpips, mse" in PICK_HELP
    # reconstruct's PSNR and SSIM are eval's whole-image ones: the same code on the same inputs
    photo, other = make_photo(32, 32), make_photo(32, 32, seed=1)
    whole = region_scores(photo, other, None, ["psnr", "ssim"])
    assert psnr(photo, other) == whole["psnr"] and ssim(photo, other) == whole["ssim"]
