"""The command line names the simulation's scenarios without importing it (that would load
the embedded Redis and the collector on every command): the two lists must agree."""

from __future__ import annotations

from chalicelib.cli import build_parser
from chalicelib.simulate import SCENARIOS


def test_the_scenario_choices_are_the_simulations_scenarios() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    simulate = sub.choices["simulate"]  # type: ignore[index]
    scenario = next(a for a in simulate._actions if a.dest == "scenario")
    assert tuple(scenario.choices) == tuple(SCENARIOS)
