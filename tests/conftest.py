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


@pytest.fixture(scope="session")
def editor(tiny_spec):
    from icdedit.editor import Editor
    from icdedit.loader import load_model

    return Editor(load_model(tiny_spec, device="cpu", dtype="fp32"))


@pytest.fixture(scope="session")
def editor64(tiny_spec):
    """The same model in float64: the exact results that float32 errors are measured against
    (see tests/tolerance.py)."""
    from icdedit.editor import Editor
    from icdedit.loader import load_model

    return Editor(load_model(tiny_spec, device="cpu", dtype="fp64"))


@pytest.fixture
def photo_path(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    make_photo(96, 64).save(path)
    return path


@pytest.fixture(scope="session")
def ref(tiny_spec):
    """The independent reference's models: separately merged forward and reverse UNets."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from . import reference

    base = tiny_spec.base
    config = UNet2DConditionModel.load_config(base, subfolder="unet")
    return {
        "fwd": reference.merged_unet(tiny_spec.teacher, tiny_spec.forward_lora, config),
        "rev": reference.merged_unet(tiny_spec.teacher, tiny_spec.reverse_lora, config),
        "vae": AutoencoderKL.from_pretrained(base, subfolder="vae").eval(),
        "tok": CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
        "te": CLIPTextModel.from_pretrained(base, subfolder="text_encoder").eval(),
    }


@pytest.fixture(scope="session")
def ref64(tiny_spec, ref):
    """The reference in float64: the exact results that float32 errors are measured against
    (see tests/tolerance.py). Same weights; the LoRAs merged in float64."""
    import copy

    import torch
    from diffusers import UNet2DConditionModel

    from . import reference

    config = UNet2DConditionModel.load_config(tiny_spec.base, subfolder="unet")
    return {
        "fwd": reference.merged_unet(tiny_spec.teacher, tiny_spec.forward_lora, config, dtype=torch.float64),
        "rev": reference.merged_unet(tiny_spec.teacher, tiny_spec.reverse_lora, config, dtype=torch.float64),
        "vae": copy.deepcopy(ref["vae"]).double(),
        "tok": ref["tok"],
        "te": copy.deepcopy(ref["te"]).double(),
    }


# -- SDXL: the tiny random model with SDXL's topology, and its independent reference ----------------
@pytest.fixture(scope="session")
def xl_spec(tmp_path_factory):
    from icdedit.specs import load_spec
    from icdedit.tiny import build_tiny_model

    return load_spec(build_tiny_model(tmp_path_factory.mktemp("tiny-xl"), family="sdxl"))


@pytest.fixture(scope="session")
def xl_editor(xl_spec):
    from icdedit.editor import Editor
    from icdedit.loader import load_model

    return Editor(load_model(xl_spec, device="cpu", dtype="fp32"))


@pytest.fixture(scope="session")
def xl_editor64(xl_spec):
    from icdedit.editor import Editor
    from icdedit.loader import load_model

    return Editor(load_model(xl_spec, device="cpu", dtype="fp64"))


@pytest.fixture(scope="session")
def xl_ref(xl_spec):
    """The reference's own models: forward and reverse UNets merged separately, both encoders."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from . import reference

    base = xl_spec.base
    config = UNet2DConditionModel.load_config(base, subfolder="unet")
    return {
        "fwd": reference.merged_unet(xl_spec.teacher, xl_spec.forward_lora, config),
        "rev": reference.merged_unet(xl_spec.teacher, xl_spec.reverse_lora, config),
        "vae": AutoencoderKL.from_pretrained(base, subfolder="vae").eval(),
        "toks": [CLIPTokenizer.from_pretrained(base, subfolder=s) for s in ("tokenizer", "tokenizer_2")],
        "encs": [
            CLIPTextModel.from_pretrained(base, subfolder="text_encoder").eval(),
            CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2").eval(),
        ],
    }


@pytest.fixture(scope="session")
def xl_ref64(xl_spec, xl_ref):
    """The reference in float64 (tests/tolerance.py): the LoRAs merged in float64."""
    import copy

    import torch
    from diffusers import UNet2DConditionModel

    from . import reference

    config = UNet2DConditionModel.load_config(xl_spec.base, subfolder="unet")
    return {
        "fwd": reference.merged_unet(xl_spec.teacher, xl_spec.forward_lora, config, dtype=torch.float64),
        "rev": reference.merged_unet(xl_spec.teacher, xl_spec.reverse_lora, config, dtype=torch.float64),
        "vae": copy.deepcopy(xl_ref["vae"]).double(),
        "toks": xl_ref["toks"],
        "encs": [copy.deepcopy(encoder).double() for encoder in xl_ref["encs"]],
    }
