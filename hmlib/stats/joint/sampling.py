"""Sampling the joint model until it passes the convergence gate, within a time budget.

:func:`sample_until_gate` runs nutpie's NUTS in the background and checks
the convergence gate (:func:`hmlib.stats.joint.summaries.gate_message`) as
the chains go, so that a fit which misses the gate narrowly costs a few
hundred more draws instead of a new run.

Without a time budget there is one check: ``draws`` per chain after
``tune`` warm-up iterations, the run as asked for. With one, a run is
planned with :data:`CONTINUATIONS`\\ ``[-1]`` times its draws; when every
chain has ``draws`` draws the gate is checked on exactly the first
``draws`` draws of every chain while the chains go on sampling (a copy of
the trace is read; nothing waits for the check); if it fails the check is
repeated at the next checkpoint (``1.25``, ``1.5``, ``1.75``, then ``2``
times ``draws``), and so on. A run
whose last checkpoint still misses the gate (slow mixing that more draws of
the same adaptation do not fix, or a warm-up that ended badly) is followed
by a new run with twice the warm-up and twice the draws, on seed
``SeedSequence([seed, k]).generate_state(1)[0]`` for run ``k``, checked the
same way; at most :data:`MAX_RUNS` runs. Nothing starts that is predicted
not to end within the budget: a continuation at the run's own rate of
draws after warm-up, a new run at twice the time its predecessor took to
its first checkpoint. Only the reported run's draws are kept.

A run that misses the gate with divergent transitions is not followed by a
longer run of the same model: longer chains do not get a sampler into a
funnel. With a ``fallback`` (the fit's: the model rebuilt with every
level's effects non-centred, :func:`hmlib.stats.joint.parameterisation.fallback_parameterisation`)
the next run samples that model instead, at the first run's sizes, and the
sizes double from there as before, up to :data:`MAX_RUNS` runs of the new
model. This happens at most once per fit; every run records its
divergences and whether it sampled the fall-back model. The fall-back is
kept only if its first run diverges less often, per draw, than the run it
followed: non-centring helps where the data say little about each
cluster's effect and can hurt where they say much (``bench/fallback_rule.py``:
on a gaussian outcome with 25 patients in each of 12 sites the chosen
model's second run ended with 1 divergent transition in 800 draws per
chain, the fall-back's runs with 4 in 400, 125 in 800 and 944 in 1,600,
R-hat 1.87; with the rule the chosen model's third run passed). Otherwise
the runs go back to the first model, at the size the next run of it would
have had (still at most :data:`MAX_RUNS` runs of it), and the fall-back's
run is recorded but not reported.

A continuation is sound because chains are truncated at a checkpoint fixed
in advance: each chain's first ``n`` draws after warm-up do not depend on
how many draws were planned or on when the trace was read (nutpie seeds
every chain from the run's seed; ``tests/test_joint_model.py`` checks that a
continued run truncated at ``n`` equals a plain run of ``n``
draws). So the reported fit is reproduced by its run's seed, warm-up and
draws given explicitly. Stopping at the first checkpoint that passes is
the usual practice of running a sampler longer until its diagnostics are
acceptable (Vehtari et al. 2021, section 4); with at most five checks per
run, on the diagnostics and never on the estimates, its effect on the
estimates is far below their Monte Carlo error.

Vehtari A, Gelman A, Simpson D, Carpenter B, Buerkner PC (2021).
Rank-normalization, folding, and localization: an improved R-hat for
assessing convergence of MCMC. Bayesian Analysis 16(2), 667-718.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from hmlib.progress import report
from hmlib.stats.joint.summaries import gate_message

__all__ = ["CONTINUATIONS", "MAX_RUNS", "DrawProgress", "extension_hint", "extension_text", "sample_until_gate"]

#: The checkpoints of a run with a time budget, as multiples of its draws per chain.
CONTINUATIONS = (1.0, 1.25, 1.5, 1.75, 2.0)
#: At most this many runs (each with twice the warm-up and draws of the one before).
MAX_RUNS = 3
#: Seconds between looks at the chains' progress while waiting for a checkpoint.
_POLL_S = 0.2


def sample_until_gate(compiled, summarise: Callable, *, draws: int, tune: int, chains: int, cores: int | None,
                      seed: int, adaptation: str, budget_s: float | None, start_wall: float,
                      fallback: Callable | None = None):
    """Sample with nutpie, continuing the chains or starting new runs until the gate passes (module docstring).

    Parameters
    ----------
    compiled : nutpie compiled model
    summarise : callable
        ``posterior dict -> (original-scale draws, summary table, correlation)``;
        the gate reads the summary table.
    draws, tune, chains : int
        The first run's sizes per chain.
    cores : int or None
        Cores for the chains (default ``chains``).
    seed : int
        The first run's seed.
    adaptation : str
        nutpie's mass-matrix adaptation.
    budget_s : float or None
        Wall seconds the whole fit may take from ``start_wall``
        (``time.perf_counter()`` when the fit began); None: one check, no
        extension.
    fallback : callable, optional
        ``() -> compiled model or None``: the model to sample after a run
        that missed the gate with divergent transitions (module docstring);
        None from it, or no ``fallback``: the runs go on with ``compiled``.

    Returns
    -------
    tuple
        ``(trace, posterior, divergences, (original-scale draws, summary, correlation), attempts)``
        of the reported run, truncated at its last checkpoint. ``attempts``
        lists every run: ``draws`` (its last checkpoint), ``tune``, ``seed``,
        ``seconds``, ``converged``, ``checkpoints`` (draws per chain at
        each check), ``divergences`` (at its last checkpoint), ``fallback``
        (it sampled the fall-back model), and the sampler's work
        (``leapfrog_warmup``, ``leapfrog_per_draw``, ``max_depth_draws``:
        :func:`_effort`; ``seconds_per_gradient``:
        :meth:`DrawProgress.seconds_per_gradient`).
    """
    attempts = []
    size_k, switched, tried = 0, False, False     # the runs' doubling restarts on the fall-back model
    first_run_s = None
    chosen = None                        # (model, its next size, its last run's time to a first checkpoint)
    while True:
        k = len(attempts)
        run_seed = seed if k == 0 else int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
        base, run_tune = draws * 2 ** size_k, tune * 2 ** size_k
        checkpoints = [base] if budget_s is None else [int(round(base * f)) for f in CONTINUATIONS]
        label = "" if k == 0 else f"new run {k + 1}" + (", non-centred" if switched else "")
        out, record, first_s = _run(compiled, summarise, checkpoints, tune=run_tune, chains=chains,
                                    cores=cores or chains, seed=run_seed, adaptation=adaptation,
                                    budget_s=budget_s, start_wall=start_wall, label=label)
        record |= {"divergences": int(out[2]), "fallback": switched}
        attempts.append(record)
        first_run_s = first_s if first_run_s is None else first_run_s
        used = time.perf_counter() - start_wall
        if record["converged"] or budget_s is None or record["checkpoints"][-1] < checkpoints[-1]:
            return (*out, attempts)
        if switched and size_k == 0 and _no_better(record, attempts[-2]):
            # the fall-back did no better than the run it followed: back to the chosen model (module docstring)
            compiled, size_k, first_s = chosen
            switched = False
            if size_k >= MAX_RUNS or used + 2.0 * first_s > budget_s:
                return (*out, attempts)
            continue
        # the fall-back run has the first run's sizes: predicted at twice the first run's time, compiling included
        if record["divergences"] and fallback is not None and not tried and used + 2.0 * first_run_s <= budget_s:
            tried = True
            replacement = fallback()
            if replacement is not None:
                chosen = (compiled, size_k + 1, first_s)
                compiled, switched, size_k = replacement, True, 0
                continue
        size_k += 1
        if size_k >= MAX_RUNS or used + 2.0 * first_s > budget_s:
            return (*out, attempts)


def _no_better(fallback_run: dict, before: dict) -> bool:
    """Whether the fall-back's first run diverged no less often per draw than the run it followed (per chain:
    every run has the same chains; at each run's last checkpoint): then the fall-back is given up."""
    return fallback_run["divergences"] / fallback_run["draws"] >= before["divergences"] / before["draws"]


def _run(compiled, summarise, checkpoints, *, tune, chains, cores, seed, adaptation, budget_s, start_wall, label):
    """One run: sample to each checkpoint in turn until the gate passes, the last one, or the budget."""
    import nutpie

    progress = DrawProgress(label, tune=tune)
    started = time.perf_counter()
    sampler = nutpie.sample(compiled, draws=checkpoints[-1], tune=tune, chains=chains, cores=cores, seed=seed,
                            progress_bar=False, adaptation=adaptation, blocking=False,
                            progress_callback=progress, progress_rate=500)
    checked, first_s, complete = [], None, None
    try:
        for i, n in enumerate(checkpoints):
            progress.target = n
            if i:
                progress.run = ", ".join(filter(None, [label, f"continued to {n} draws"]))
            if n < checkpoints[-1] and complete is None:
                progress.wait_for(tune + n, sampler)
            if complete is not None or n == checkpoints[-1] or _finished(sampler):
                # the last checkpoint, a sampler that finished early, or an error it stopped on (raised here)
                trace = complete = complete if complete is not None else sampler.wait()
                rate = 0.0
            else:
                # the chains go on while the gate is checked on a copy: a draw after n is never read
                rate = progress.seconds_per_draw(n)
                trace = sampler.inspect()
            post, divergences = _first_draws(trace, n)
            tables = summarise(post)
            converged, _ = gate_message(tables[1], divergences, "")
            checked.append(n)
            now = time.perf_counter()
            first_s = first_s if first_s is not None else now - started
            if converged or n == checkpoints[-1]:
                break
            if budget_s is not None and now - start_wall + rate * (checkpoints[i + 1] - n) > budget_s:
                break
    finally:
        if complete is None and not _finished(sampler):
            sampler.cancel()
    record = {"draws": checked[-1], "tune": tune, "seed": seed, "seconds": round(time.perf_counter() - started, 2),
              "converged": bool(converged), "checkpoints": checked}
    record |= _effort(trace, checked[-1]) | {"seconds_per_gradient": progress.seconds_per_gradient()}
    return (_truncated(trace, checked[-1]), post, divergences, tables), record, first_s


def _effort(trace, n: int) -> dict:
    """The sampler's work in a run: leapfrog steps (gradient evaluations) of the warm-up and per draw after it.

    Per chain: ``leapfrog_warmup``, the warm-up's steps; ``leapfrog_per_draw``,
    the mean steps per draw over its first ``n`` draws after warm-up (chains
    whose step sizes adapted differently differ here). ``max_depth_draws``:
    how many of those draws stopped at the maximum tree depth (all chains).
    A chain's time is its steps times :meth:`DrawProgress.seconds_per_gradient`,
    so the two say whether a slow fit is a hard posterior (many steps per
    draw) or an expensive gradient (large data).
    """
    stats = trace["sample_stats"]
    steps = np.asarray(stats["n_steps"].values, dtype=float)[:, :n]
    depth = np.asarray(stats["maxdepth_reached"].values)[:, :n] if "maxdepth_reached" in stats else None
    warm = []
    if "warmup_sample_stats" in trace.children and "n_steps" in trace["warmup_sample_stats"]:
        warm = [int(w) for w in np.asarray(trace["warmup_sample_stats"]["n_steps"].values).sum(axis=1)]
    return {"leapfrog_warmup": warm,
            "leapfrog_per_draw": [round(float(c), 2) for c in steps.mean(axis=1)] if steps.size else [],
            "max_depth_draws": int(depth.sum()) if depth is not None else 0}


def _finished(sampler) -> bool:
    """Whether the background sampler has stopped (nutpie raises TimeoutError while its lock is busy: not yet)."""
    try:
        return bool(sampler.is_finished)
    except TimeoutError:
        return False


def _first_draws(trace, n: int):
    """The first ``n`` draws after warm-up of every chain (``{name: (chain, draw, ...)}``) and their divergences."""
    post = {name: trace.posterior[name].values[:, :n] for name in trace.posterior.data_vars}
    diverging = np.asarray(trace.sample_stats["diverging"].values)[:, :n]
    for name, values in post.items():
        if values.shape[1] < n or (values.dtype.kind == "f" and np.isnan(values).any()):
            raise RuntimeError(f"nutpie returned fewer than {n} draws per chain of '{name}' at a checkpoint.")
    return post, int(diverging.sum())


def _truncated(trace, n: int):
    """nutpie's DataTree with its posterior and sample statistics cut at ``n`` draws per chain."""
    for group in ("posterior", "sample_stats"):
        trace[group] = trace[group].to_dataset().isel(draw=slice(0, n))
    return trace


def _sizes(attempt: dict) -> str:
    return f"{attempt['draws']} draws after {attempt['tune']} warm-up iterations per chain"


def extension_count(attempts: list) -> int:
    """Extensions made: continuations of a run's chains plus new runs."""
    return sum(len(a["checkpoints"]) - 1 for a in attempts) + len(attempts) - 1


def extension_text(attempts: list, budget_s: float | None) -> str:
    """What the automatic extension did, in words (empty without extension)."""
    if extension_count(attempts) < 1:
        return ""
    first = attempts[0]
    budget = f" within the time budget of {budget_s / 60:g} minutes" if budget_s else ""
    steps = []
    for k, attempt in enumerate(attempts):
        checks = attempt["checkpoints"]
        where = "the first run" if k == 0 else f"a new run with {attempt['tune']} warm-up iterations"
        if k and attempt.get("fallback") and not attempts[k - 1].get("fallback"):
            where = (f"as that run ended with {attempts[k - 1]['divergences']} divergent transition(s), a new run "
                     f"of the model with every level's effects non-centred ({attempt['tune']} warm-up iterations)")
        elif k and attempts[k - 1].get("fallback") and not attempt.get("fallback"):
            before = attempts[k - 2]
            where = (f"as the non-centred run diverged no less often ({attempts[k - 1]['divergences']} divergent "
                     f"transition(s) in {attempts[k - 1]['draws']} draws per chain, against {before['divergences']} "
                     f"in {before['draws']} before it), a new run of the first model with {attempt['tune']} warm-up "
                     "iterations")
        if len(checks) > 1:
            steps.append(f"{where} was continued to {', then '.join(str(c) for c in checks[1:])} draws per chain")
        elif k:
            steps.append(f"{where} and {attempt['draws']} draws per chain")
    return (f"the first run ({first['checkpoints'][0]} draws after {first['tune']} warm-up "
            f"iterations per chain) missed the convergence gate, so the sampling was extended "
            f"automatically{budget}: {'; '.join(steps)}, checking the gate each time; the reported run has "
            f"{_sizes(attempts[-1])} ({sum(a['seconds'] for a in attempts):.0f} s of sampling in all).")


def extension_hint(attempts: list, *, fast: bool, budget_s: float | None, elapsed_s: float) -> str:
    """What a failed gate's message says to try, given what the extension did."""
    last = attempts[-1]
    draws, tune = last["draws"], last["tune"]
    if fast and budget_s is None:
        return "Fast mode uses small settings; run without fast=True."
    if budget_s is None:
        return (f"Run longer (draws={draws}, tune={tune} now; try draws={2 * draws}, tune={max(2 * tune, 1000)}) "
                "or check the model.")
    done = extension_text(attempts, budget_s) or f"The run ({_sizes(last)}) missed the convergence gate."
    fallback_runs = sum(bool(a.get("fallback")) for a in attempts)
    chosen_runs = len(attempts) - fallback_runs
    # the fall-back's only run diverged no less often than the run it followed, and the first model had no run left
    given_up = (last.get("fallback") and fallback_runs == 1 and chosen_runs >= MAX_RUNS
                and _no_better(last, attempts[-2]))
    full = len(last["checkpoints"]) == len(CONTINUATIONS)
    if full and (given_up or (fallback_runs if last.get("fallback") else chosen_runs) >= MAX_RUNS):
        of = " of the non-centred model" if last.get("fallback") and not given_up else ""
        then = ", and the non-centred model's run diverged no less often" if given_up else ""
        why = (f"the limit of {MAX_RUNS} runs{of}, each continued to {CONTINUATIONS[-1]:g} times its draws, was "
               f"reached{then}: check the model.")
    else:
        why = (f"more sampling (about {2 * last['seconds']:.0f} s more, {elapsed_s:.0f} s used) would not end "
               f"within the time budget of {budget_s / 60:g} minutes: raise joint_model.time_budget_minutes in "
               "the params file, or check the model.")
    return f"{done[0].upper()}{done[1:]} Not extended further: {why}"


class DrawProgress:
    """nutpie's progress callback: draws done over every chain, with the time left of the slowest chain.

    Called from nutpie's thread every ``progress_rate`` milliseconds with its
    ``ChainProgress`` records (``finished_draws``; ``total_draws``, warm-up
    and sampling; ``tuning``; ``runtime_ms``, the chain's sampling time).
    Reports to :mod:`hmlib.progress` as ``warm-up`` while a chain still tunes,
    then ``sampling``, counting up to ``target`` draws after warm-up per
    chain (the next checkpoint, with ``tune`` given; default every planned
    draw). The chains run
    side by side, so the time left is the largest of the chains' own: a
    chain's draws left at its rate in its current phase (NUTS draws cost far
    more early in the warm-up than after it, so a rate since the start
    overstates what is left once a chain samples), or at its overall rate in
    the first second or 10 draws of a phase. ``run`` names a run after the
    first (the automatic extension) after the phase. It also records each
    chain's finished draws and when the last chain left its warm-up, for
    :meth:`wait_for` and :meth:`seconds_per_draw`.
    """

    def __init__(self, run: str = "", *, tune: int | None = None):
        self.run = run
        self.target: int | None = None
        self.finished: list[int] = []
        self._warmup_end: float | None = None
        self._tune = tune
        self._lock = threading.Lock()
        self._phase_start: dict[int, tuple] = {}  # chain -> (tuning, draws, runtime ms) when its phase began
        self._work: list[tuple[int, float]] = []  # per chain: (leapfrog steps, sampling ms) so far

    def __call__(self, chains) -> None:
        done = total = 0
        left = []
        finished_all = []
        for index, chain in enumerate(chains):
            finished, planned, ms = int(chain.finished_draws), int(chain.total_draws), float(chain.runtime_ms)
            finished_all.append(finished)
            if self.target is not None and self._tune is not None:
                planned = min(planned, self._tune + self.target)
            finished = min(finished, planned)
            done, total = done + finished, total + planned
            start = self._phase_start.get(index)
            if start is None or start[0] != bool(chain.tuning):
                start = self._phase_start[index] = (bool(chain.tuning), finished, ms)
            if finished >= planned:
                continue
            drawn, spent = finished - start[1], ms - start[2]
            if drawn < 10 or spent < 1000:
                drawn, spent = finished, ms
            left.append((planned - finished) * spent / drawn / 1000 if drawn > 0 and spent > 0 else None)
        tuning = any(c.tuning for c in chains)
        with self._lock:
            self.finished = finished_all
            self._work = [(int(c.total_num_steps), float(c.runtime_ms)) for c in chains]
            if not tuning and self._warmup_end is None and chains:
                self._warmup_end = time.perf_counter()
        eta = max(left) if left and None not in left else None
        phase = "warm-up" if tuning else "sampling"
        if self.run:
            phase = f"{phase}, {self.run}"
        report("joint model", done, total, unit="draws", detail=phase, eta=eta)

    def wait_for(self, total_draws: int, sampler) -> None:
        """Block until every chain has ``total_draws`` draws (warm-up included) or the sampler has finished."""
        while not _finished(sampler):
            with self._lock:
                finished = list(self.finished)
            if finished and min(finished) >= total_draws:
                return
            time.sleep(_POLL_S)

    def seconds_per_gradient(self) -> float | None:
        """Sampling seconds per leapfrog step (one gradient evaluation) of a chain, over every chain so far.

        From nutpie's own per-chain counts (``total_num_steps``, ``runtime_ms``)
        at its last progress call; None before a step is recorded. The chains
        run side by side, so on a machine with fewer free cores than chains
        this is their shared cost.
        """
        with self._lock:
            steps = sum(s for s, _ in self._work)
            ms = sum(m for _, m in self._work)
        return round(ms / 1000.0 / steps, 7) if steps > 0 and ms > 0 else None

    def seconds_per_draw(self, draws: int) -> float:
        """Wall seconds per draw after warm-up (per chain; the chains run side by side), ``draws`` drawn so far."""
        with self._lock:
            end = self._warmup_end
        if end is None or draws <= 0:
            return float("inf")
        return max(time.perf_counter() - end, 0.0) / draws
