"""``trickbag tune``: a hyperparameter search over a recipe, on Optuna's engine.

What is Optuna's and what is ours:

* **Optuna's**: the study and its storage (a journal file, or any SQLAlchemy URL such as
  ``postgresql://``), the samplers (TPE by default, with the constant liar for parallel
  workers; random; CMA-ES), the pruners (median, Hyperband), heartbeats and the retry of a
  trial whose worker died (``RetryHeartbeatStaleTrialCallback``), the plots.
* **Ours**: the space is the recipe's ``search:`` section (``recipes.search``: recipe keys,
  checked, and ``trick.<name>`` switches); a trial is a recipe built through
  ``recipes.override`` / ``experiments.tricks.with_tricks`` and trained by ``Trainer`` in its
  own run directory (``OUT/trials/NNNN``), so a trial cut short by a crash continues from its
  checkpoint when retried; the objective is the validation accuracy after the last epoch, and
  the trainer reports it after every epoch to the pruner (a callback).

Storage by default: Optuna's journal file ``OUT/study.journal`` (safe for several processes on
one machine, unlike SQLite). Optuna gives heartbeats only to its RDB storage; the journal
storage here adds them (``HeartbeatJournalStorage``: a heartbeat is a trial system attribute),
and, because a journal lives on one machine, a trial whose worker process is gone counts as
stale at once instead of after the grace period. Either way a killed worker's trial is failed
and queued again with the same parameters, and the retry resumes the dead trial's run.

Workers: ``workers`` processes each ask the storage for trials until the study holds
``trials`` finished ones (complete or pruned). On the journal storage a file lock makes
"count, then ask" atomic, so the study ends with exactly that many; workers on several
machines (an RDB URL) may finish one extra trial each at the very end. Rerunning the same
command continues the study: finished trials are kept, an interrupted trial (Ctrl-C) is
queued again and resumes from its checkpoint.

At the end the best trial's recipe is written as ``OUT/best.yaml`` (``trickbag train --recipe
OUT/best.yaml`` trains it), trained once more in ``OUT/best-<key>/`` and tested there: the test
set is looked at once, after the search, never by it.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trickbag._checks import check_choice, did_you_mean
from trickbag._json import write_json
from trickbag.recipes.config import Recipe, RecipeError, from_dict, override, recipe_key, save
from trickbag.experiments.ablate import threads_per_job
from trickbag.recipes.search import TRICK_PREFIX, Dimension, corners
from trickbag.train.callbacks import Callback

__all__ = ["SAMPLERS", "PRUNERS", "TuneConfig", "TuneError", "apply_params", "check_space", "open_storage", "describe_storage",
           "HeartbeatJournalStorage", "PruningCallback", "tune", "study_counts", "format_params"]

SAMPLERS = ("tpe", "random", "cmaes")
PRUNERS = ("median", "hyperband", "none")
#: seconds between a running trial's heartbeats, and how long one may be missing before the trial is stale
HEARTBEAT_S, GRACE_S = 10, 60
#: a worker stops after this many diverged trials in a row (a space where nothing trains would run forever)
MAX_FAILED_IN_A_ROW = 10


class TuneError(RuntimeError):
    """The study cannot go on (a worker failed, the study was made from another recipe)."""


# --- the space applied to a recipe (no Optuna, no torch) ---------------------------------------


def apply_params(recipe: Recipe, params: dict[str, Any]) -> Recipe:
    """``recipe`` with one trial's values: tricks switched first (``trick.<name>``), then the
    recipe keys set (so a searched key wins over what a trick sets)."""
    from trickbag.experiments.tricks import with_tricks

    switches = {k[len(TRICK_PREFIX):]: bool(v) for k, v in params.items() if k.startswith(TRICK_PREFIX)}
    if switches:
        recipe = with_tricks(recipe, list(switches), [name for name, on in switches.items() if on])
    keys = {k: v for k, v in params.items() if not k.startswith(TRICK_PREFIX)}
    return override(recipe, keys) if keys else recipe


def check_space(recipe: Recipe) -> tuple[Dimension, ...]:
    """The recipe's search space, with every trick name known and every bound and choice
    accepted by the recipe's own checks (a recipe is built at each ``corners`` point);
    ``RecipeError`` naming the key otherwise, before any trial runs."""
    from trickbag.experiments.tricks import TRICKS

    space = recipe.search_space()
    if not space:
        raise RecipeError("the recipe has no search section: add one (search: {optim.lr: {log_uniform: [0.01, 1.0]}, ...}) "
                          "or give --space FILE")
    for d in space:
        if d.is_trick and d.trick not in TRICKS.names():
            raise RecipeError(f"search key {d.key!r}: no trick {d.trick!r}{did_you_mean(d.trick, TRICKS.names())}; "
                              "trickbag tricks lists them")
    for point in corners(space):
        try:
            apply_params(recipe, point)
        except (RecipeError, ValueError) as exc:
            raise RecipeError(f"search space: {point} gives a recipe that is refused: {exc}") from None
    if recipe.data.val_size <= 0:
        raise RecipeError("recipe key 'data.val_size' must be > 0 for tuning: trials are judged on the validation split "
                          "(the test set is used once, for the best trial)")
    return space


# --- storage ---------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _journal_storage_class():
    import optuna
    from optuna.storages._heartbeat import BaseHeartbeat

    class _HeartbeatJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
        """Optuna's journal storage with Optuna's heartbeat protocol: a running trial's worker
        writes ``{"t", "host", "pid"}`` to the trial's system attribute ``heartbeat`` every
        ``heartbeat_interval`` seconds; a running trial is stale when its last heartbeat (or
        its start) is older than ``grace_period``, or at once when its worker was a process of
        this machine that no longer runs (a journal lives on one machine)."""

        def __init__(self, backend: Any, heartbeat_interval: int, grace_period: int, callback: Any) -> None:
            super().__init__(backend)
            self._heartbeat_interval, self._grace_period, self._callback = heartbeat_interval, grace_period, callback
            self._host = socket.gethostname()

        def record_heartbeat(self, trial_id: int) -> None:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                self.set_trial_system_attr(trial_id, "heartbeat", {"t": time.time(), "host": self._host, "pid": os.getpid()})

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now, stale = time.time(), []
            for trial in self.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                start = trial.datetime_start.timestamp() if trial.datetime_start else now
                beat = trial.system_attrs.get("heartbeat") or {}
                if beat.get("t", 0) < start:  # a retry carries its dead first try's attributes: not its own beat
                    beat = {}
                last = beat.get("t") or start
                gone = beat.get("host") == self._host and isinstance(beat.get("pid"), int) and not _alive(beat["pid"])
                if gone or now - last > self._grace_period:
                    stale.append(trial._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self._heartbeat_interval

        def get_heartbeat_stale_trial_callback(self):
            return self._callback

    return _HeartbeatJournalStorage


def HeartbeatJournalStorage(path: str | os.PathLike, heartbeat_interval: int = HEARTBEAT_S, grace_period: int = GRACE_S):
    """A journal file storage at ``path`` with heartbeats and the retry of stale trials."""
    import optuna

    cls = _journal_storage_class()
    return cls(optuna.storages.journal.JournalFileBackend(str(path)), heartbeat_interval, grace_period, _retry())


def _quiet_optuna() -> None:
    """Optuna's own log at WARNING, and no warnings for what trickbag uses on purpose: the
    heartbeat classes Optuna marks experimental, and heartbeats around ask/tell trials (this
    module beats them itself, as ``optimize`` would)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def _retry():
    import optuna

    # a retried trial is the same recipe: it keeps the dead one's reports, and its run resumes the dead one's checkpoint
    return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3, inherit_intermediate_values=True)


def open_storage(storage: str | None, out: str | os.PathLike, heartbeat_interval: int = HEARTBEAT_S, grace_period: int = GRACE_S):
    """Optuna storage for ``storage``: None -> the journal file ``OUT/study.journal``; a URL
    (``postgresql://...``, ``sqlite:///...``) -> Optuna's RDB storage with heartbeats; any other
    string -> a journal file at that path."""
    import optuna

    _quiet_optuna()
    if storage is None:
        return HeartbeatJournalStorage(Path(out) / "study.journal", heartbeat_interval, grace_period)
    if "://" in storage:
        try:
            return optuna.storages.RDBStorage(storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                              heartbeat_stale_trial_callback=_retry())
        except ImportError as exc:
            raise TuneError(f"--storage {describe_storage(storage, out)}: its database driver is missing "
                            f"({exc.__cause__ or exc}); for PostgreSQL: pip install 'psycopg[binary]'") from None
        except Exception as exc:  # sqlalchemy's OperationalError and friends: say what and where, not a traceback
            raise TuneError(f"--storage {describe_storage(storage, out)}: cannot open it: {str(exc).splitlines()[0]}") from None
    folder = Path(storage).resolve().parent
    if not folder.is_dir():
        raise TuneError(f"--storage {storage}: folder {folder} does not exist (a journal file's "
                        "folder must; a database storage is a URL such as postgresql://user@host/db)")
    return HeartbeatJournalStorage(storage, heartbeat_interval, grace_period)


def describe_storage(storage: str | None, out: str | os.PathLike) -> str:
    """The storage as the JSON output names it (a URL's password hidden)."""
    if storage is None:
        return f"journal:{Path(out) / 'study.journal'}"
    if "://" in storage:
        scheme, rest = storage.split("://", 1)
        if "@" in rest:
            creds, host = rest.rsplit("@", 1)
            user = creds.split(":", 1)[0]
            return f"{scheme}://{user}{':***' if ':' in creds else ''}@{host}"
        return storage
    return f"journal:{storage}"


def _sampler(name: str, seed: int, space_size: int):
    import optuna

    if name == "tpe":  # the constant liar keeps parallel workers from drawing the same point
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=space_size > 1)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    try:
        import cmaes  # noqa: F401  (Optuna's CMA-ES sampler needs it)
    except ImportError:
        raise TuneError("--sampler cmaes needs the cmaes package: pip install cmaes") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def _pruner(name: str, epochs: int):
    import optuna

    if name == "median":
        # below the median of earlier trials at the same epoch, after 3 trials and a third of the epochs: with
        # n_warmup_steps=1 a 12-trial study of fashion-mnist-quick pruned 8 of 12 after their first epoch, where the
        # run that became the best ranked low (an early epoch says little when warmups and peak lrs differ)
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, epochs // 3))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(2, epochs))
    return optuna.pruners.NopPruner()


# --- one trial ------------------------------------------------------------------------------------


class PruningCallback(Callback):
    """Trainer callback: after every epoch, the validation accuracy goes to the Optuna trial
    (``trial.report(val_acc, epoch)``); when the pruner says so the trainer stops there."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.last_val_acc: float | None = None
        self.pruned_at: int | None = None

    def on_epoch_end(self, trainer: Any, metrics: dict) -> None:
        value = metrics.get("val_acc")
        if value is None:
            return
        self.last_val_acc = float(value)
        self.trial.report(self.last_val_acc, int(metrics["epoch"]))
        if metrics["epoch"] < trainer.recipe.train.epochs and self.trial.should_prune():
            self.pruned_at = int(metrics["epoch"])
            trainer.should_stop = True
            trainer.stop_reason = f"pruned by the tuner after epoch {self.pruned_at} (validation accuracy {self.last_val_acc:.4f})"


class _Interrupted(Exception):
    """The trial's trainer saved its checkpoint after Ctrl-C."""


def _run_number(trial: Any) -> int:
    """The trial whose run directory this trial trains in: a retry continues the first try's."""
    attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)
    return int(attrs.get("failed_trial", trial.number))


def run_trial(trial: Any, base: Recipe, space: tuple[Dimension, ...], out: Path, data_cache: dict) -> float:
    """Train one trial; return the validation accuracy after its last epoch. Raises Optuna's
    ``TrialPruned`` when pruned, ``_Interrupted`` after Ctrl-C."""
    import optuna

    from trickbag.data import load_dataset
    from trickbag.recipes.search import suggest
    from trickbag.train import Trainer

    recipe = apply_params(base, suggest(trial, space)).member()  # a trial is one net, also of an ensemble recipe
    d = recipe.data
    key = (d.name, d.data_dir, d.val_size, recipe.train.seed)
    if key not in data_cache:
        data_cache.clear()
        data_cache[key] = load_dataset(d.name, d.data_dir, d.val_size, recipe.train.seed)
    run_dir = out / "trials" / f"{_run_number(trial):04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    callback = PruningCallback(trial)
    trainer = Trainer(recipe, out=run_dir, callbacks=[callback], quiet=True, data=data_cache[key], tensorboard=False)
    summary = trainer.fit_or_continue()
    if str(summary.get("stopped", "")).startswith("interrupted"):
        raise _Interrupted(summary["stopped"])
    trial.set_user_attr("train_time_s", summary.get("train_time_s"))
    if callback.pruned_at is not None:
        raise optuna.TrialPruned(f"pruned after epoch {callback.pruned_at}")
    if callback.last_val_acc is None:  # a resume of a finished run reports nothing new: its last record is the answer
        callback.last_val_acc = _last_val_acc(run_dir)
    return callback.last_val_acc


def _last_val_acc(run_dir: Path) -> float:
    from trickbag.train.callbacks import parse_line

    records = [r for line in (run_dir / "metrics.jsonl").read_text().splitlines() if (r := parse_line(line)) and "val_acc" in r]
    if not records:
        raise TuneError(f"trial run {run_dir} finished without a validation accuracy")
    return float(records[-1]["val_acc"])


# --- workers --------------------------------------------------------------------------------------


@dataclass
class TuneConfig:
    """Everything a worker process needs (picklable)."""

    recipe: dict  # the base recipe (to_dict), --set applied
    trials: int
    out: str
    study: str
    storage: str | None = None
    timeout: float | None = None  # seconds; no new trial starts after it (a running one finishes)
    workers: int = 1
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    heartbeat_interval: int = HEARTBEAT_S
    grace_period: int = GRACE_S
    threads: int = 0  # torch threads per worker (0: cores // workers)
    final: bool = True  # train the best trial's recipe once more and test it
    extra: dict = field(default_factory=dict)

    def validate(self) -> TuneConfig:
        from trickbag._checks import check_positive

        check_positive("trials", self.trials)
        check_positive("workers", self.workers)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("pruner", self.pruner, PRUNERS)
        if self.timeout is not None:
            check_positive("timeout", self.timeout)
        return self


@contextlib.contextmanager
def _claim_lock(config: TuneConfig) -> Iterator[None]:
    """Makes "count the finished trials, then ask for one" atomic among the workers of this
    machine (for the journal storage, which only they share)."""
    if config.storage is not None and "://" in config.storage:
        yield
        return
    import fcntl

    with open(Path(config.out) / ".claim.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def study_counts(trials: list) -> dict[str, int]:
    """``{"complete", "pruned", "fail", "running", "waiting"}`` counts of a study's trials
    (``study.get_trials(deepcopy=False)``)."""
    from optuna.trial import TrialState

    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "fail",
             TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
    counts = dict.fromkeys(names.values(), 0)
    for t in trials:
        counts[names[t.state]] += 1
    return counts


@contextlib.contextmanager
def _heartbeat(storage: Any, trial_id: int) -> Iterator[None]:
    """Optuna's heartbeat protocol around a trial asked through ask/tell (``optimize`` does
    the same around its own trials)."""
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def worker(config: TuneConfig, index: int) -> None:
    """One worker process: ask, train, tell, until the study holds ``config.trials`` finished
    trials or ``config.timeout`` has passed."""
    import optuna
    import torch
    from optuna.trial import TrialState

    from trickbag.train.errors import DivergedError

    _quiet_optuna()
    torch.set_num_threads(config.threads or threads_per_job(config.workers))
    base = from_dict(config.recipe)
    space = base.search_space()
    out = Path(config.out)
    storage = open_storage(config.storage, config.out, config.heartbeat_interval, config.grace_period)
    # a resumed study must not replay the random start-up points it already drew: seed by worker and trials so far
    so_far = len(storage.get_all_trials(storage.get_study_id_from_name(config.study), deepcopy=False))
    study = optuna.load_study(study_name=config.study, storage=storage,
                              sampler=_sampler(config.sampler, config.seed * 1_000_003 + 1009 * index + so_far, len(space)),
                              pruner=_pruner(config.pruner, base.train.epochs))
    deadline = time.monotonic() + config.timeout if config.timeout else math.inf
    data_cache: dict = {}
    failed_in_a_row = 0
    while time.monotonic() < deadline:
        with _claim_lock(config):
            optuna.storages.fail_stale_trials(study)
            counts = study_counts(study.get_trials(deepcopy=False))
            if counts["complete"] + counts["pruned"] + counts["running"] >= config.trials:
                return
            trial = study.ask()
            if hasattr(storage, "record_heartbeat"):  # its own beat before the lock opens: never taken for its first try's
                storage.record_heartbeat(trial._trial_id)
            trial.set_user_attr("interrupted", False)  # a retry copies its first try's attributes
        with _heartbeat(storage, trial._trial_id):
            try:
                value = run_trial(trial, base, space, out, data_cache)
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
                failed_in_a_row = 0
                continue
            except DivergedError as exc:  # a result of these parameters, not a bug: the study goes on
                trial.set_user_attr("error", str(exc))
                study.tell(trial, state=TrialState.FAIL)
                failed_in_a_row += 1
                if failed_in_a_row >= MAX_FAILED_IN_A_ROW:
                    raise TuneError(f"{failed_in_a_row} trials in a row diverged (the last: {exc}); narrow the search space "
                                    "(a lower lr bound?)") from None
                continue
            except (_Interrupted, KeyboardInterrupt):
                trial.set_user_attr("interrupted", True)
                study.tell(trial, state=TrialState.FAIL)
                raise SystemExit(130) from None
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
                    study.tell(trial, state=TrialState.FAIL)
                raise
        study.tell(trial, value)
        failed_in_a_row = 0


def _worker_main(config: TuneConfig, index: int) -> None:
    """Process entry: a clean exit status (130 after Ctrl-C, 1 with the error on stderr)."""
    try:
        worker(config, index)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BaseException as exc:
        print(f"error: tune worker {index}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


# --- the study ------------------------------------------------------------------------------------


def _requeue_interrupted(study: Any) -> int:
    """Trials a Ctrl-C failed are queued again (each once), so a rerun resumes them."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    for t in trials:
        if t.state.name == "FAIL" and t.user_attrs.get("interrupted") and t.number not in retried:
            _retry()(study, t)  # up to its max_retry
    return len(study.get_trials(deepcopy=False)) - len(trials)


def format_params(params: dict[str, Any]) -> str:
    """``optim.lr=0.1022, loss.label_smoothing=0.1`` (floats to 4 significant digits)."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _trial_line(t: Any, best: Any) -> str:
    params = format_params(t.params)
    what = {"COMPLETE": f"val {t.value:.4f}", "PRUNED": f"pruned at epoch {t.last_step}",
            "FAIL": f"failed{': ' + t.user_attrs['error'] if 'error' in t.user_attrs else ' (interrupted)' if t.user_attrs.get('interrupted') else ''}"}[t.state.name]
    best_text = f"best {best.value:.4f} (trial {best.number})" if best is not None else "no best yet"
    return f"trial {t.number} {what}  [{params}]  {best_text}"


def _best(trials: list):
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def tune(config: TuneConfig, progress: Callable[[str], None] | None = None, bar: bool = False) -> dict:
    """Run (or continue) the study of ``config``; returns the ``--json`` object (module docstring)."""
    try:
        import optuna
    except ImportError:
        raise TuneError("trickbag tune needs Optuna: pip install 'trickbag[tune]' (or -e '.[tune]' in a checkout)") from None

    config.validate()
    say = progress or (lambda text: None)
    base = from_dict(config.recipe)
    check_space(base)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _quiet_optuna()
    storage = open_storage(config.storage, out, config.heartbeat_interval, config.grace_period)
    study = optuna.create_study(study_name=config.study, storage=storage, direction="maximize", load_if_exists=True)
    made_from = {"recipe_key": recipe_key(base), "search": base.search}
    stored = study.user_attrs.get("made_from")
    if stored is None:
        study.set_user_attr("made_from", json.loads(json.dumps(made_from)))
    elif stored != json.loads(json.dumps(made_from)):
        raise TuneError(f"study {config.study!r} in {describe_storage(config.storage, out)} was made from another recipe or "
                        "search space; give another --study NAME (or --out) for this one")
    if not study.get_trials(deepcopy=False):  # a new study tries the recipe as it is first
        from trickbag.recipes.config import flat_values
        from trickbag.recipes.search import starting_point

        start = starting_point(base.search_space(), flat_values(base))
        if start:
            study.enqueue_trial(start)
    optuna.storages.fail_stale_trials(study)
    requeued = _requeue_interrupted(study)
    if requeued:
        say(f"{requeued} interrupted trial(s) queued again; they resume from their checkpoints")
    counts = study_counts(study.get_trials(deepcopy=False))
    say(f"study {config.study!r}: {counts['complete'] + counts['pruned']} of {config.trials} trials finished; "
        f"{config.workers} worker(s), sampler {config.sampler}, pruner {config.pruner}, storage {describe_storage(config.storage, out)}")
    _run_workers(config, study, say, bar)
    return _finish(config, study, base, say)


def _run_workers(config: TuneConfig, study: Any, say: Callable[[str], None], bar: bool) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(config, i), name=f"trickbag-tune-{i}") for i in range(config.workers)]
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    progress_bar = _Bar(config.trials, bar, say)
    for p in procs:
        p.start()
    try:
        while True:
            alive = any(p.is_alive() for p in procs)
            trials = study.get_trials(deepcopy=False)
            for t in sorted(trials, key=lambda t: t.number):
                if t.state.is_finished() and t.number not in seen:
                    seen.add(t.number)
                    progress_bar.print(_trial_line(t, _best(trials)))
            counts = study_counts(trials)
            progress_bar.update(counts["complete"] + counts["pruned"])
            if not alive:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        for p in procs:  # the workers got the same Ctrl-C: each saves its trial's checkpoint and stops
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
        progress_bar.close()
        raise
    finally:
        for p in procs:
            p.join()
        progress_bar.close()
    if any(p.exitcode == 130 for p in procs):
        raise KeyboardInterrupt
    failed = [p for p in procs if p.exitcode not in (0, None)]
    if failed:
        errors = [t.user_attrs.get("error") for t in study.get_trials(deepcopy=False) if t.state.name == "FAIL" and "error" in t.user_attrs]
        raise TuneError(f"{len(failed)} tune worker(s) stopped with an error (exit status {failed[0].exitcode})"
                        + (f": {errors[-1]}" if errors else "; see the messages above"))


class _Bar:
    """A rich progress bar over the study's finished trials (on stderr), with the trial lines
    printed above it; without a terminal, the lines alone (through ``say``)."""

    def __init__(self, total: int, enabled: bool, say: Callable[[str], None]) -> None:
        self.progress, self.say = None, say
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("study"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     console=Console(stderr=True), transient=True)
            self.task = self.progress.add_task("trials", total=total)
            self.progress.start()

    def print(self, line: str) -> None:
        if self.progress is not None:
            self.progress.console.print(line, highlight=False, markup=False)
        else:
            self.say(line)

    def update(self, done: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _finish(config: TuneConfig, study: Any, base: Recipe, say: Callable[[str], None]) -> dict:
    out = Path(config.out)
    trials = study.get_trials(deepcopy=False)
    counts = study_counts(trials)
    best = _best(trials)
    result: dict[str, Any] = {
        "study": config.study, "storage": describe_storage(config.storage, out), "direction": "maximize",
        "metric": "val_acc", "best": None, "test_acc": None, "recipe": None,
        "trials": {k: counts[k] for k in ("complete", "pruned", "fail", "running")}, "plots": {}, "final_run": None,
        "config": {k: v for k, v in asdict(config).items() if k != "recipe"},
    }
    if best is not None:
        result["best"] = {"value": best.value, "params": best.params, "trial": best.number}
        description = (f"Tuned from {config.extra.get('recipe_name', 'a recipe')} by trickbag tune: validation accuracy "
                       f"{best.value:.4f} (trial {best.number} of study {config.study!r}, {counts['complete']} complete trials). "
                       + base.description).strip()
        recipe = override(apply_params(base, best.params), {"description": description})
        path = save(recipe, out / "best.yaml")
        result["recipe"] = str(path)
        if config.final:
            result.update(_final_run(recipe, out, say))
    result["plots"] = _plots(study, out / "plots")
    write_json(out / "tune.json", result)
    return result


def _final_run(recipe: Recipe, out: Path, say: Callable[[str], None]) -> dict:
    """Train the best recipe once more in its own run directory and test it (once)."""
    from trickbag.train import Trainer
    from trickbag.train.errors import DivergedError

    run_dir = out / f"best-{recipe_key(recipe)}"
    say(f"training the best recipe once more in {run_dir} and testing it")
    try:
        summary = Trainer(recipe.member(), out=run_dir, quiet=True, tensorboard=False).fit_or_continue()
    except DivergedError as exc:  # the study's result still stands and is written; the retrain's failure is said
        say(f"the best recipe diverged when trained once more: {exc}")
        return {"test_acc": None, "final_run": str(run_dir), "final_val_acc": None, "final_error": str(exc)}
    return {"test_acc": summary.get("test_acc"), "final_run": str(run_dir), "final_val_acc": summary.get("best_val_acc")}


def _plots(study: Any, folder: Path) -> dict[str, str]:
    """Optuna's matplotlib plots as PNG: the optimization history, the parameter importances
    and the contour of the two most important parameters (a slice plot for one). A plot that
    needs more trials than the study has is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    names = sorted({k for t in complete for k in t.params})
    importances: dict[str, float] = {}
    plans: list[tuple[str, Callable[[], Any]]] = [("history", lambda: ovm.plot_optimization_history(study))]
    if len(complete) >= 2 and names:
        with contextlib.suppress(Exception):
            importances = optuna.importance.get_param_importances(study)
        plans.append(("importances", lambda: ovm.plot_param_importances(study)))
    top = [k for k in importances][:2] or names[:2]
    if len(top) == 2 and len(complete) >= 3:
        plans.append(("contour", lambda: ovm.plot_contour(study, params=top)))
    elif top:
        plans.append(("slice", lambda: ovm.plot_slice(study, params=top)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        for name, make in plans:
            try:
                ax = make()
            except Exception:  # a plot Optuna cannot draw for this study (too few distinct values): left out
                plt.close("all")
                continue
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.tight_layout()
            path = folder / f"{name}.png"
            fig.savefig(path, dpi=100)
            plt.close("all")
            made[name] = str(path)
    return made
