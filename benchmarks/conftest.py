"""The benchmark's own tests use the test suite's set-up (offline hub, a private weights
folder) and its fixtures: the tiny models and the float64 editors."""

from tests.conftest import *  # noqa: F403 - the environment set-up and the shared fixtures (SDXL's too)
