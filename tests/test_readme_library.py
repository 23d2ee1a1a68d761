"""The README's library example, run as written on the tiny models: a drift between the README
and the library (a renamed method, argument or preset) breaks this test."""

import re
from pathlib import Path

from PIL import Image

from .helpers import make_photo

README = Path(__file__).resolve().parent.parent / "README.md"

# The only changes made to the example: the tiny models for the released ones, the CPU for CUDA.
SUBSTITUTIONS = {
    '"sd15-4step-v1"': '"tiny"',
    '"sdxl-4step-v2"': '"tiny-xl"',
    'device="cuda"': 'device="cpu"',
}


def library_example() -> str:
    """The first python block of the README's "## Library" section."""
    section = README.read_text().split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_library_example_runs_as_written(tmp_path, monkeypatch):
    code = library_example()
    assert "Editor.load(" in code  # the README's entry point is what this test runs
    for released, tiny in SUBSTITUTIONS.items():
        assert released in code, f"the README's example no longer says {released}: update SUBSTITUTIONS"
        code = code.replace(released, tiny)
    monkeypatch.chdir(tmp_path)
    Path("examples").mkdir()
    make_photo(96, 64).save("examples/chelsea.jpg")  # the clone's photo, as the README's paths say
    before = Image.open("examples/chelsea.jpg").tobytes()
    namespace = {}
    exec(compile(code, "README.md (library)", "exec"), namespace)
    written = {"tiger.png", "tiger-xl.png", "fox.png", "fox-rain.png"}
    assert written <= {p.name for p in tmp_path.iterdir()}
    for name in written:
        with Image.open(name) as image:
            assert image.mode == "RGB" and min(image.size) > 0
    assert Image.open("examples/chelsea.jpg").tobytes() == before  # the input is never written
    # what the example's names hold: one target per edit, one generated image per seed
    assert len(namespace["result"].targets) == 1
    assert namespace["fox"].image.size == Image.open("fox.png").size == (64, 64)  # the tiny model's size
    assert namespace["editor"].spec.name == "tiny" and namespace["xl"].spec.name == "tiny-xl"
