"""Shared test configuration.

Hypothesis profiles (python-zstandard style): ``default`` for development, ``ci`` (chosen
automatically when CI is set) with more examples and no deadline, ``expensive`` for long
fuzzing runs.  Pick one with HYPOTHESIS_PROFILE=...
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=60, deadline=None)
settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "expensive", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))
