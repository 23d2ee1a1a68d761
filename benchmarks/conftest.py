"""The benchmark's own tests use the test suite's set-up (offline hub, a private weights
folder) and its fixtures: the tiny models and the float64 editors."""

from tests.conftest import *  # noqa: F403 - the environment set-up and the shared fixtures
from tests.test_sdxl import xl_editor, xl_editor64, xl_ref, xl_spec  # noqa: F401 - fixtures
