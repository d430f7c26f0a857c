import pytest

from vestige.step import Step, parse_snapshot_spec, snapshot_iterations


def test_steps_read_epochs_and_iterations():
    assert Step.parse("100it").to_iterations(50) == 100
    assert Step.parse("2ep").to_iterations(50) == 100
    assert Step.parse("1ep50it").to_iterations(30) == 80
    assert str(Step.parse("1ep50it")) == "1ep50it"


@pytest.mark.parametrize("text", ["", "ep", "3", "2 epochs", "-1it", "1.5ep"])
def test_malformed_steps_are_rejected(text):
    with pytest.raises(ValueError):
        Step.parse(text)


def test_default_schedule_is_step_zero_and_every_epoch():
    assert snapshot_iterations(["0it", "every 1ep"], 10, 30) == [0, 10, 20, 30]


def test_dense_early_snapshots_stop_at_their_limit():
    steps = snapshot_iterations(["every 5it until 1ep", "every 1ep"], 20, 60)
    assert steps == [5, 10, 15, 20, 40, 60]


def test_log_spaced_snapshots_run_from_start_to_stop():
    steps = snapshot_iterations(["log 5 from 1it to 1ep"], 100, 300)
    assert steps[0] == 1 and steps[-1] == 100
    gaps = [b / a for a, b in zip(steps, steps[1:], strict=False)]
    assert all(g > 1.5 for g in gaps)


def test_snapshots_beyond_training_are_dropped():
    assert snapshot_iterations(["5ep", "every 2ep"], 10, 30) == [20]


@pytest.mark.parametrize("text", ["every", "every 0it", "log 1 from 1it to 2ep", "sometimes"])
def test_malformed_snapshot_rules_are_rejected(text):
    with pytest.raises(ValueError):
        parse_snapshot_spec(text)
