"""Section 4, the fleet: IdP requests per second of many sidecars started together,
on a simulated clock, with the sidecar's own scheduling functions."""

from __future__ import annotations

import random
import statistics
from typing import Any

from token_refresher.schedule import Pace

from .common import Plan, Progress


def simulate_fleet(
    *,
    pods: int,
    lifetime: float,
    minutes: int,
    ratio: float,
    jitter: float,
    min_interval: float,
    seed: int,
    start_up_window: bool = True,
) -> dict[str, Any]:
    """IdP requests per 1-second bucket of `pods` sidecars started within one second.

    Each sidecar fetches a token when it starts (counted apart: a pod needs its token at
    start, whatever the schedule) and then refreshes as `Refresher._succeeded` plans it:
    `Pace.first_refresh` for the first token of the process, `Pace.next_refresh` for every later
    one, with the sidecar's own functions. Responses are instant on this clock.
    """
    rnd = random.Random(seed)  # noqa: S311 - a simulation, reproducible by seed
    horizon = minutes * 60
    buckets = [0] * horizon
    pace = Pace(ratio, jitter, min_interval)
    for _ in range(pods):
        at = rnd.random()  # the start: all within one second
        plan = pace.first_refresh if start_up_window else pace.next_refresh
        at = plan(at, lifetime, rnd.random)
        while at < horizon:
            buckets[int(at)] += 1
            at = pace.next_refresh(at, lifetime, rnd.random)
    total = sum(buckets)
    mean = total / horizon
    peak = max(buckets)
    return {
        "refreshes": total,
        "start_fetches": pods,
        "mean_per_s": round(mean, 2),
        "peak_per_s": peak,
        "peak_second": buckets.index(peak),
        "peak_to_mean": round(peak / mean, 2),
    }


def bench_fleet(plan: Plan, say: Progress) -> dict[str, Any]:
    from token_refresher.settings import Settings

    defaults = Settings.model_fields
    ratio = float(defaults["refresh_ratio"].default)
    min_interval = float(defaults["min_refresh_interval"].default)
    say.say(
        "fleet",
        f"{plan.fleet_pods} schedules, 60 s tokens, {plan.fleet_minutes} simulated minutes, "
        f"{plan.fleet_seeds} seeds, JITTER 0.1 and 0, with and without the start-up window",
    )
    cases = []
    for jitter in (float(defaults["jitter"].default), 0.0):
        for window in (True, False):
            runs = [
                simulate_fleet(
                    pods=plan.fleet_pods,
                    lifetime=60.0,
                    minutes=plan.fleet_minutes,
                    ratio=ratio,
                    jitter=jitter,
                    min_interval=min_interval,
                    seed=seed,
                    start_up_window=window,
                )
                for seed in range(1, plan.fleet_seeds + 1)
            ]
            ratios = [r["peak_to_mean"] for r in runs]
            cases.append(
                {
                    "jitter": jitter,
                    "start_up_window": window,
                    "peak_to_mean": round(statistics.mean(ratios), 2),
                    "peak_to_mean_worst": max(ratios),
                    "mean_per_s": runs[0]["mean_per_s"],
                    "peak_per_s": runs[0]["peak_per_s"],
                    "seeds": [r["peak_to_mean"] for r in runs],
                }
            )
    return {
        "pods": plan.fleet_pods,
        "lifetime_s": 60,
        "minutes": plan.fleet_minutes,
        "refresh_ratio": ratio,
        "min_refresh_interval": min_interval,
        "start_fetches_note": f"{plan.fleet_pods} start-up fetches within the first second, "
        "not counted: every pod needs its token at start",
        "cases": cases,
    }
