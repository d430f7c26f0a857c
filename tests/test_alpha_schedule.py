"""Alpha schedules of the selectivity regularizer (docs/science.md §3)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from vestige.errors import ConfigError
from vestige.selectivity.alpha import AlphaSchedule

IPE = 10  # iterations per epoch


def alphas(value: object, steps: list[int], iterations_per_epoch: int = IPE) -> list[float]:
    schedule = AlphaSchedule.parse(value).resolve(iterations_per_epoch)
    return [schedule.alpha_at(step) for step in steps]


def test_a_number_is_constant_for_the_whole_run():
    assert alphas(-20.0, [0, 1, 10_000]) == [-20.0] * 3


def test_integers_and_numeric_strings_are_read_as_floats():
    for value in (-20, "-20", "-20.0"):
        values = alphas(value, [0, 99])
        assert values == [-20.0, -20.0]
        assert all(type(v) is float for v in values)
    assert alphas([{"from": "0ep", "alpha": -3}], [5]) == [-3.0]


def test_windows_switch_at_epoch_boundaries_and_leave_zero_in_gaps():
    windows = [
        {"from": "0ep", "until": "2ep", "alpha": -5.0},
        {"from": "3ep", "alpha": -20.0},
    ]
    steps = [0, 19, 20, 29, 30, 500]
    assert alphas(windows, steps) == [-5.0, -5.0, 0.0, 0.0, -20.0, -20.0]


def test_the_papers_from_epoch_5_condition_as_windows_and_as_shorthand():
    windows = [{"from": "0ep", "until": "5ep", "alpha": 0}, {"from": "5ep", "alpha": -20.0}]
    steps = [0, 49, 50, 51, 900]
    expected = [0.0, 0.0, -20.0, -20.0, -20.0]
    assert alphas(windows, steps) == expected
    assert alphas("-20@5ep", steps) == expected


def test_shorthand_with_until_regularizes_then_releases():
    assert alphas("-20@0ep..5ep", [0, 49, 50, 900]) == [-20.0, -20.0, 0.0, 0.0]
    assert alphas("2.5@1ep5it..30it", [14, 15, 29, 30]) == [0.0, 2.5, 2.5, 0.0]


def test_a_ramp_moves_linearly_from_alpha_start_then_holds():
    ramp = [{"from": "5ep", "ramp": "1ep", "alpha": -20.0}]
    assert alphas(ramp, [49, 50, 55, 59, 60, 100]) == pytest.approx(
        [0.0, 0.0, -10.0, -18.0, -20.0, -20.0]
    )
    down = [{"from": "0ep", "until": "4ep", "ramp": "4ep", "alpha_start": -20, "alpha": 0}]
    assert alphas(down, [0, 20, 39, 40]) == pytest.approx([-20.0, -10.0, -0.5, 0.0])


def test_epoch_bounds_resolve_with_the_run_s_iterations_per_epoch():
    schedule = AlphaSchedule.parse("-20@2ep")
    assert [schedule.resolve(ipe).alpha_at(19) for ipe in (5, 10, 20)] == [-20.0, 0.0, 0.0]
    assert [schedule.resolve(ipe).alpha_at(2 * ipe) for ipe in (5, 10, 20)] == [-20.0] * 3


def test_a_resumed_run_continues_the_schedule_at_its_absolute_step():
    """The value at step k is a pure function of k: a fresh object, one that has already walked
    the schedule up to a resume point, and any order of queries all agree."""
    windows = [
        {"from": "1ep", "until": "3ep", "ramp": "1ep", "alpha": -20},
        {"from": "3ep", "alpha": 4},
    ]
    walked = AlphaSchedule.parse(windows).resolve(IPE)
    before_kill = [walked.alpha_at(step) for step in range(17)]
    resumed = AlphaSchedule.parse(windows).resolve(IPE)
    after_resume = [resumed.alpha_at(step) for step in range(17, 40)]
    uninterrupted = [walked.alpha_at(step) for step in range(40)]
    assert before_kill + after_resume == uninterrupted
    assert resumed.alpha_at(17) == pytest.approx(-14.0) and resumed.alpha_at(17) != 0.0


def test_omegaconf_nodes_from_hydra_are_accepted():
    node = OmegaConf.create(
        {"alpha": [{"from": "0ep", "until": "1ep", "alpha": 0}, {"from": "1ep", "alpha": -20}]}
    )
    assert alphas(node.alpha, [9, 10]) == [0.0, -20.0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([{"from": "0ep", "alpha": 1}, {"from": "2ep", "alpha": 2}], "overlap"),
        ([{"from": "0ep", "until": "3ep", "alpha": 1}, {"from": "2ep", "alpha": 2}], "overlap"),
        ([{"from": "2ep", "until": "1ep", "alpha": 1}], "ends before it starts"),
        ([{"from": "0ep", "until": "1ep", "ramp": "2ep", "alpha": 1}], "shorter than its ramp"),
        ([{"from": "0ep", "alpha": 1, "alpha_start": 2}], "no ramp"),
        ([{"from": "0ep"}], "lacks alpha"),
        ([{"from": "0ep", "alpha": 1, "step": 3}], "unknown"),
        ([{"from": "5", "alpha": 1}], "step '5'"),
        ("-20@5ep..", "shorthand"),
        ("minus twenty", "not a finite number"),
        (float("inf"), "not a finite number"),
        (True, "expected a number"),
        ([], "expected a number"),
    ],
)
def test_malformed_schedules_are_one_line_errors_naming_the_key(value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        AlphaSchedule.parse(value)
    assert str(caught.value).startswith("regularizer.alpha=")
    assert "\n" not in str(caught.value)


def test_overlap_that_depends_on_the_epoch_length_is_caught_when_resolved():
    schedule = AlphaSchedule.parse(
        [{"from": "0ep", "until": "25it", "alpha": 1}, {"from": "2ep", "alpha": 2}]
    )
    assert schedule.resolve(20).alpha_at(40) == 2.0
    with pytest.raises(ConfigError, match="overlap"):
        schedule.resolve(10)
