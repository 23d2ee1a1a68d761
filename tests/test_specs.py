from pathlib import Path

import pytest
import yaml

from icdedit.errors import ModelError, UsageError
from icdedit.specs import DEFAULT_MODEL, builtin_specs, load_spec, resolve_model


def test_every_released_sd15_checkpoint_is_shipped(monkeypatch, tmp_path):
    monkeypatch.setenv("ICDEDIT_HOME", str(tmp_path))
    specs = builtin_specs()
    expected = {
        "sd15-4step-v1": ((19, 259, 519, 779), (259, 519, 779, 999)),
        "sd15-4step-v2": ((19, 249, 499, 699), (249, 499, 699, 999)),
        "sd15-3step": ((19, 339, 699), (339, 699, 999)),
    }
    for name, (fwd, rev) in expected.items():
        spec = specs[name]
        assert (spec.forward_timesteps, spec.reverse_timesteps) == (fwd, rev)
        assert spec.base == "stable-diffusion-v1-5/stable-diffusion-v1-5" and not spec.base_is_local
        assert spec.guidance_embed_dim == 512 and spec.lora_alpha == 8 and spec.start_timestep == 19
        assert spec.teacher == tmp_path / "sd15_cfg_distill.pt"  # $ICDEDIT_HOME expanded
        assert spec.forward_lora.name.endswith("_".join(map(str, fwd)) + ".safetensors")
        assert spec.sources["teacher"].startswith("https://")
    assert DEFAULT_MODEL == "sd15-4step-v1"
    assert resolve_model(None).name == "sd15-4step-v1"


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


GOOD = {
    "base": "base",
    "teacher": "weights/t.pt",
    "forward_lora": "f.safetensors",
    "reverse_lora": "r.safetensors",
    "forward_timesteps": [19, 259],
    "reverse_timesteps": [259, 999],
}


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path):
    spec = load_spec(_write(tmp_path / "m.yaml", GOOD))
    assert spec.teacher == tmp_path / "weights" / "t.pt"
    assert spec.base == str((tmp_path / "base").resolve()) and spec.base_is_local
    assert spec.name == "m" and spec.resolution == 512


def test_hub_ids_stay_hub_ids(tmp_path):
    spec = load_spec(_write(tmp_path / "m.yaml", {**GOOD, "base": "someone/some-model"}))
    assert spec.base == "someone/some-model" and not spec.base_is_local


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": "red"}, "unknown key"),
        ({"forward_timesteps": [19, 2000]}, "forward_timesteps"),
        ({"resolution": 500}, "multiple of 64"),
        ({"forward_timesteps": "19 259"}, "list of integers"),
        ({"resolution": float("inf")}, "m.yaml"),  # int() overflows
        ({"lora_alpha": float("nan")}, "lora_alpha"),
        ({"sources": ["a", "b"]}, "m.yaml"),
        ({"family": "sd3"}, "family 'sd3' is not supported"),
    ],
)
def test_bad_model_descriptions_are_refused(tmp_path, change, message):
    with pytest.raises(ModelError, match=message):
        load_spec(_write(tmp_path / "m.yaml", {**GOOD, **change}))


def test_missing_keys_are_named(tmp_path):
    data = dict(GOOD)
    del data["teacher"]
    with pytest.raises(ModelError, match="missing key.*teacher"):
        load_spec(_write(tmp_path / "m.yaml", data))


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(UsageError) as info:  # a name the tool does not know: exit 2
        resolve_model("sd99")
    assert "sd15-4step-v1" in info.value.hint and "tiny" in info.value.hint
    with pytest.raises(UsageError, match="unknown model 'tinyy'") as info:
        resolve_model("tinyy")
    assert info.value.hint.startswith("did you mean 'tiny'?")
