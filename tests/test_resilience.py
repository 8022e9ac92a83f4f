"""SIGKILL at seeded random points of caption, embed and train, then rerun: nothing lost or
duplicated, and the result equals an uninterrupted run's (bench/bench_resilience.py runs more points)."""

from __future__ import annotations

import pytest

from tests.support import resilience

pytestmark = pytest.mark.slow
POINTS_PER_STAGE = 2
SEED = 12


@pytest.fixture(scope="module")
def reference(tiny_catalog, tmp_path_factory):
    _, _, config = tiny_catalog
    return resilience.reference(tmp_path_factory.mktemp("resilience"), config)


@pytest.mark.parametrize("stage", resilience.STAGES)
def test_sigkill_then_rerun_equals_the_uninterrupted_run(reference, stage):
    outcomes = []
    for point in resilience.kill_points(stage, POINTS_PER_STAGE, SEED):
        outcome = resilience.kill_then_rerun(reference, stage, point)
        outcome.update(resilience.check(reference, stage))
        outcomes.append(outcome)
    print(outcomes)
    assert any(outcome["killed"] for outcome in outcomes), outcomes
