"""A scenario made into a run: the one place that generates its fleet and
its settings, for the CLI, the benchmarks and the tests alike."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from .engine import Progress, Settings, Simulation
from .fleet import generate
from .scenario import Operator, Scenario


def scenario_simulation(
    sc: Scenario,
    *,
    hosts: int | None = None,
    seed: int | None = None,
    operator: Operator | None = None,
    every_check_in: bool = False,
    progress: Callable[[Progress], None] | None = None,
) -> Simulation:
    """The run of ``sc``, ready to `run`: its fleet generated for ``seed``
    (default: the scenario's), resized to ``hosts`` when given; ``operator``
    replaces the scenario's; ``every_check_in`` is the naive baseline.
    Raises SimError when the settings cannot be simulated faithfully."""
    fleet_spec = sc.fleet if hosts is None else dataclasses.replace(sc.fleet, hosts=hosts)
    seed = sc.seed if seed is None else seed
    fleet = generate(fleet_spec, random.Random(seed), sc.start)
    settings = Settings(
        name=sc.name, start=sc.start, duration=sc.duration, horizon=sc.horizon,
        checkin_interval=fleet_spec.checkin_interval, campaign_tick=fleet_spec.campaign_tick,
        seed=seed, operator=sc.operator if operator is None else operator,
        every_check_in=every_check_in, analysis=sc.analysis,
    )  # fmt: skip
    return Simulation(sc.campaign, fleet, sc.failures, settings, progress)
