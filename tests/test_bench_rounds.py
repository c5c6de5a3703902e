"""`make bench` reports the served rows the goals read as the median of alternating rounds."""

from __future__ import annotations

from bench.runners import Result, median_of_rounds


def test_the_median_round_is_kept_with_every_rounds_rate_and_the_measures_alternate() -> None:
    calls: list[str] = []
    rates = {"a": iter([600.0, 760.0, 680.0]), "b": iter([250.0, 240.0, 270.0])}

    def measure(name: str):
        def run() -> Result:
            calls.append(name)
            return Result(name, 100, 100 / next(rates[name]))

        return run

    a, b = median_of_rounds([measure("a"), measure("b")], 3)

    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert round(a.items_per_s, 6) == 680.0
    assert [round(x, 6) for x in a.rounds] == [600.0, 760.0, 680.0]
    assert round(b.items_per_s, 6) == 250.0
    assert a.row()["rounds_items_per_s"] == [600.0, 760.0, 680.0]


def test_one_round_is_that_round() -> None:
    (only,) = median_of_rounds([lambda: Result("x", 10, 2.0)], 1)
    assert only.items_per_s == 5.0
    assert only.rounds == [5.0]
    assert "rounds_items_per_s" not in Result("y", 1, 1.0).row()
