import pytest

from icdedit.errors import SettingsError
from icdedit.presets import EditSettings, builtin_presets, load_preset


def test_default_preset_is_the_official_sd15_setting():
    s = load_preset(None)
    assert (s.guidance, s.tau, s.cross_replace, s.self_replace, s.amplify) == (19, 0.8, 0.3, 0.6, 4)
    assert s.as_dict() == {**EditSettings().as_dict()}


def test_builtin_presets_load_and_say_what_they_are_for():
    presets = builtin_presets()
    assert {"default", "faithful", "strong"} <= set(presets)
    for name in presets:
        s = load_preset(name)
        assert s.description
    assert (
        load_preset("faithful").cross_replace
        > load_preset("default").cross_replace
        > load_preset("strong").cross_replace
    )


def test_flags_override_the_preset_and_none_means_unset():
    s = load_preset("strong").with_overrides(guidance=7.0, tau=None)
    assert s.guidance == 7.0 and s.tau == load_preset("strong").tau and s.amplify == 6


def test_unknown_keys_are_rejected_with_the_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("guidance: 5\nguidence: 7\n")
    with pytest.raises(SettingsError) as info:
        load_preset(str(path))
    assert "guidence" in info.value.message and "guidance" in info.value.hint


@pytest.mark.parametrize(
    "text, key",
    [
        ("tau: 1.5", "tau"),
        ("guidance: -1", "guidance"),
        ("amplify: many", "amplify"),
        ("mode: swap", "mode"),
        ("cross_replace: true", "cross_replace"),
        ("method: paint", "method"),
        ("amplify_prompt: ''", "amplify_prompt"),
    ],
)
def test_out_of_range_values_name_key_value_and_range(tmp_path, text, key):
    path = tmp_path / "p.yaml"
    path.write_text(text + "\n")
    with pytest.raises(SettingsError) as info:
        load_preset(str(path))
    assert key in info.value.message and text.split(": ")[1] in info.value.message.lower()
    if key not in ("mode", "method", "amplify_prompt"):
        assert ".." in info.value.hint


def test_bad_yaml_and_unknown_names(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("guidance: [1\n")
    with pytest.raises(SettingsError, match="cannot read preset"):
        load_preset(str(path))
    with pytest.raises(SettingsError, match="unknown preset") as info:
        load_preset("wild")
    assert "default" in info.value.hint
    with pytest.raises(SettingsError, match="not found"):
        load_preset(str(tmp_path / "nope.yaml"))


def test_flag_values_are_range_checked():
    with pytest.raises(SettingsError, match="command line: self_replace"):
        EditSettings().with_overrides(self_replace=2.0)


def test_method_and_amplify_prompt_are_preset_keys_and_unset_methods_are_the_familys(tmp_path):
    from icdedit.preparation import resolve_settings
    from icdedit.specs import resolve_model

    path = tmp_path / "p.yaml"
    path.write_text("method: p2p+switch\namplify_prompt: a watercolour of a cat\n")
    s = load_preset(str(path))
    assert (s.method, s.amplify_prompt) == ("p2p+switch", "a watercolour of a cat")
    sd15, sdxl = resolve_model("sd15-4step-v1"), resolve_model("sdxl-4step-v2")
    assert load_preset("default").method is None  # left to the model
    assert resolve_settings(sd15).method == "p2p" and resolve_settings(sdxl).method == "switch"
    assert resolve_settings(sdxl, "default").method == "switch"  # an SD1.5 preset does not pick P2P for SDXL
    assert resolve_settings(sdxl, None, {"method": "p2p"}).method == "p2p"
    assert resolve_settings(sd15, str(path)).method == "p2p+switch"
