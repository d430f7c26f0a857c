"""What a person watching an analysis sees off a terminal: a line per finished item and, while a
long one runs, a line at most every `every` seconds, each with the time left."""

from vestige.train.progress import Countdown


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_carry_progress_and_a_time_left_from_the_finished_items(capsys):
    clock = FakeClock()
    countdown = Countdown("ablation", 2, "plain", every=25.0, clock=clock)
    countdown.begin("step 5")
    for _ in range(3):  # 10 s a batch: a line is due at 30 s, none before
        clock.now += 10
        countdown.batch()
    assert capsys.readouterr().out.splitlines() == [
        "step 5: 3 batches so far  [ablation 0/2, elapsed 0:00:30, ETA -]"
    ]
    countdown.finish("step 5 done")
    # one item of 3 batches took 30 s: the other will take 3 more batches, 30 s
    assert countdown.seconds_left() == 30.0
    assert capsys.readouterr().out == "step 5 done  [ablation 1/2, elapsed 0:00:30, ETA 0:00:30]\n"
    countdown.begin("step 9")
    clock.now += 10
    countdown.batch()
    assert countdown.seconds_left() == 20.0
    assert capsys.readouterr().out == ""  # the last line was 10 s ago


def test_nothing_is_printed_with_style_none(capsys):
    countdown = Countdown("linearity", 1, "none")
    countdown.begin("step 1")
    countdown.batch()
    countdown.finish("step 1 done")
    countdown.close()
    assert capsys.readouterr().out == ""
