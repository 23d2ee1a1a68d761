"""Shared fixtures: one tiny model in the official formats, built once per test session.

Nothing here touches the network: the hub is forced offline and the weights folder points
into the session's temporary directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="icdedit-test-home-")
os.environ["ICDEDIT_HOME"] = _HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "2")

from .helpers import in_float64, make_photo  # noqa: E402, F401 - re-exported: benchmarks import make_photo from here


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Path of the tiny model's YAML (SD1.5 topology, .pt teacher, PEFT-key LoRAs)."""
    from icdedit.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_spec(tiny_model):
    from icdedit.specs import load_spec

    return load_spec(tiny_model)


@pytest.fixture
def photo_path(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    make_photo(96, 64).save(path)
    return path


# -- the tiny models of both families, and the independent reference's models of each ------------
# One builder per kind of model, given the family: the SD1.5 fixtures (editor, editor64, ref, ref64)
# and the SDXL ones (xl_editor, ...) are the same models of another family.
def build_editor(spec, dtype: str):
    """icdedit's editor on the CPU; dtype "fp64" gives the exact results that float32 errors are
    measured against (see tests/tolerance.py)."""
    from icdedit.editor import Editor
    from icdedit.loader import load_model

    return Editor(load_model(spec, device="cpu", dtype=dtype))


def merged_unets(spec, dtype):
    """The reference's forward and reverse UNets, each LoRA merged separately into the teacher (in
    `dtype`)."""
    from diffusers import UNet2DConditionModel

    from . import reference

    config = UNet2DConditionModel.load_config(spec.base, subfolder="unet")
    return {
        "fwd": reference.merged_unet(spec.teacher, spec.forward_lora, config, dtype=dtype),
        "rev": reference.merged_unet(spec.teacher, spec.reverse_lora, config, dtype=dtype),
    }


def build_reference(spec, family: str) -> dict:
    """The reference's own models: merged UNets, the VAE and the text encoder(s) from the base
    folder. SD1.5: one tokenizer and encoder ("tok", "te"); SDXL: both ("toks", "encs")."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    base = spec.base
    models = {**merged_unets(spec, torch.float32), "vae": AutoencoderKL.from_pretrained(base, subfolder="vae").eval()}
    if family == "sd15":
        models["tok"] = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
        models["te"] = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").eval()
    else:
        models["toks"] = [CLIPTokenizer.from_pretrained(base, subfolder=s) for s in ("tokenizer", "tokenizer_2")]
        models["encs"] = [
            CLIPTextModel.from_pretrained(base, subfolder="text_encoder").eval(),
            CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2").eval(),
        ]
    return models


def reference_in_float64(spec, ref: dict) -> dict:
    """The reference in float64 (tests/tolerance.py): the same weights, the LoRAs merged in
    float64; the VAE and encoders are float64 copies, the tokenizers the same."""
    import copy

    import torch

    def double(value):
        if isinstance(value, list):
            return [double(v) for v in value]
        return copy.deepcopy(value).double() if isinstance(value, torch.nn.Module) else value

    others = {key: double(value) for key, value in ref.items() if key not in ("fwd", "rev")}
    return {**merged_unets(spec, torch.float64), **others}


@pytest.fixture(scope="session")
def editor(tiny_spec):
    return build_editor(tiny_spec, "fp32")


@pytest.fixture(scope="session")
def editor64(tiny_spec):
    """The same model in float64: the exact results that float32 errors are measured against
    (see tests/tolerance.py)."""
    return build_editor(tiny_spec, "fp64")


@pytest.fixture(scope="session")
def ref(tiny_spec):
    """The independent reference's models: separately merged forward and reverse UNets."""
    return build_reference(tiny_spec, "sd15")


@pytest.fixture(scope="session")
def ref64(tiny_spec, ref):
    return reference_in_float64(tiny_spec, ref)


# -- SDXL: the tiny random model with SDXL's topology, and its independent reference ----------------
@pytest.fixture(scope="session")
def xl_spec(tmp_path_factory):
    from icdedit.specs import load_spec
    from icdedit.tiny import build_tiny_model

    return load_spec(build_tiny_model(tmp_path_factory.mktemp("tiny-xl"), family="sdxl"))


@pytest.fixture(scope="session")
def xl_editor(xl_spec):
    return build_editor(xl_spec, "fp32")


@pytest.fixture(scope="session")
def xl_editor64(xl_spec):
    return build_editor(xl_spec, "fp64")


@pytest.fixture(scope="session")
def xl_inversion(xl_editor):
    """The photo the SDXL Prompt-to-Prompt tests edit (helpers.P2P_SIZE)."""
    from .helpers import P2P_SIZE, XL_SOURCE

    return xl_editor.invert(make_photo(P2P_SIZE, P2P_SIZE, seed=5), XL_SOURCE, seed=3, size=P2P_SIZE)


@pytest.fixture(scope="session")
def xl_ref(xl_spec):
    """The reference's own models: forward and reverse UNets merged separately, both encoders."""
    return build_reference(xl_spec, "sdxl")


@pytest.fixture(scope="session")
def xl_ref64(xl_spec, xl_ref):
    return reference_in_float64(xl_spec, xl_ref)
