"""Edit methods as objects: each declares the settings it reads, and every place that checks
settings (flags, grid axes, batch rows) asks it, with one policy: what the method would ignore
is refused when given explicitly."""

from __future__ import annotations

import pytest

from icdedit.errors import SettingsError
from icdedit.grid import check_grid_method, parse_grid
from icdedit.methods import METHOD_SETTINGS, METHODS, P2P, P2P_SWITCH, SWITCH, edit_method, readers
from icdedit.preparation import check_method_options, generated_noise_defaults, prepare_edit, resolve_settings

SRC, TGT = "a photo of a cat", "a photo of a dog"


def test_each_method_declares_how_it_decodes_and_what_it_reads():
    p2p, switch, both = (edit_method(name) for name in (P2P, SWITCH, P2P_SWITCH))
    assert (p2p.controls_attention, p2p.switches_prompts) == (True, False)
    assert (switch.controls_attention, switch.switches_prompts) == (False, True)
    assert (both.controls_attention, both.switches_prompts) == (True, True)
    assert both.reads == frozenset(METHOD_SETTINGS) == p2p.reads | switch.reads
    assert switch.ignored(["guidance", "blend_threshold", "cross_replace", "amplify_prompt"]) == [
        "cross_replace",
        "blend_threshold",
    ]
    assert p2p.ignored(["amplify_prompt", "blend"]) == ["amplify_prompt"] and both.ignored(METHOD_SETTINGS) == []
    assert readers(["blend"]) == [P2P, P2P_SWITCH] and readers(["amplify_prompt", "blend"]) == [P2P_SWITCH]
    assert list(METHODS) == [P2P, SWITCH, P2P_SWITCH]


def test_an_unknown_method_name_is_a_settings_error_naming_the_known_ones():
    with pytest.raises(SettingsError, match="'paint' is not an edit method") as error:
        edit_method("paint")
    assert "p2p, switch, p2p+switch" in error.value.hint


def test_flags_the_method_ignores_are_refused_with_the_methods_that_read_them(tiny_spec):
    switch = resolve_settings(tiny_spec, None, {"method": "switch"})
    with pytest.raises(SettingsError) as error:
        prepare_edit(tiny_spec, SRC, [TGT], switch, blend=[("cat", "dog")], given=["blend_threshold", "tau"])
    assert str(error.value).startswith(
        "--blend-threshold, --blend: model 'tiny' (SD1.5) edits with the 'switch' method (as asked), "
        "which uses no attention control"
    )
    assert error.value.hint == "add --method p2p (or p2p+switch), or leave them out"
    with pytest.raises(SettingsError, match="amplify_prompt cell: .*'p2p' method \\(its default\\), which switches no"):
        check_method_options(tiny_spec, "p2p", ["amplify_prompt"], cells=True)
    check_method_options(tiny_spec, "p2p+switch", METHOD_SETTINGS)  # reads them all


def test_a_grid_axis_is_refused_by_the_same_rule_blend_threshold_included():
    check_grid_method(parse_grid(["blend_threshold=0.3,0.6", "tau=0.5,0.8"]), "p2p")
    with pytest.raises(SettingsError, match="--grid blend_threshold: the 'switch' method uses no attention control"):
        check_grid_method(parse_grid(["tau=0.5,0.8", "blend_threshold=0.3,0.6"]), "switch")


def test_generated_noise_defaults_ask_the_family_methods_object(tiny_spec, xl_spec):
    assert generated_noise_defaults(tiny_spec, 5.0, 1.0) == {"method": "p2p", "guidance": 5.0, "tau": 1.0}
    assert generated_noise_defaults(xl_spec, 5.0, 1.0) == {"method": "p2p", "guidance": 5.0, "tau": 1.0}
    assert generated_noise_defaults(xl_spec, 5.0, 1.0, "switch") == {"method": "switch", "guidance": 5.0}
