"""One run: `python -m domainbed_align.train` (DomainBed's flags, plus --mask_dir).

The run is a pure function of its arguments. At every checkpoint step it evaluates every
split, appends one record, and saves a resumable checkpoint (algorithm and optimiser state,
RNG states, the records so far) atomically; the data order is a function of the step, so a run
started again in the same folder continues where the checkpoint left it and ends with the same
`results.jsonl` as an unbroken run. `Trainer` is a callable so a scheduler (submitit) can run
it in-process and requeue it.
"""
import argparse
import collections
import dataclasses
import io
import json
import math
import os
import random
import signal
import sys
import time
from typing import List, Optional, Tuple

import numpy as np
import torch

from domainbed_align import catalog, hparams_registry
from domainbed_align.algorithms import get_algorithm_class
from domainbed_align.datasets import get_dataset_class
from domainbed_align.datasets.masks import require_masks
from domainbed_align.datasets.loaders import loader_workers, train_batches
from domainbed_align.datasets.splits import domain_splits, split_indices  # noqa: F401
from domainbed_align.evaluation import evaluate_split, explain_subsample
from domainbed_align.lib import integrity, precision
from domainbed_align.lib.checkpoint_state import as_json_types, rng_state, set_rng_state
from domainbed_align.lib.errors import (ConfigError, DataError, DomainBedAlignError, StorageError,
                                        TrainingError, one_line)
from domainbed_align.lib.misc import atomic_open, json_line
from domainbed_align.lib.tb_events import NoEventLog, open_event_log
from domainbed_align.lib.tee import Tee

# the helpers' names from before they moved to lib (tests and benchmarks use them)
_rng_state, _set_rng_state, _Tee = rng_state, set_rng_state, Tee

TASKS = ("domain_generalization", "single_source")
CHECKPOINT_FILE = "checkpoint.pt"
SNAPSHOT_FILE = "explanations.npz"  # small, committed with the records (no weights)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The arguments of one run; field names and defaults are DomainBed's (`args` in records)."""

    dataset: str = "SpuriousDigits"
    algorithm: str = "ERM"
    test_envs: Tuple[int, ...] = (0,)
    data_dir: str = ""
    task: str = "domain_generalization"
    hparams: Optional[str] = None
    hparams_seed: int = 0
    trial_seed: int = 0
    seed: int = 0
    steps: Optional[int] = None
    checkpoint_freq: Optional[int] = None
    output_dir: str = "train_output"
    holdout_fraction: float = 0.2
    uda_holdout_fraction: float = 0.0
    skip_model_save: bool = False
    save_model_every_checkpoint: bool = False
    mask_dir: Optional[str] = None
    idtest_fraction: float = 0.0   # ours: a third, untouched split of each training domain
    tensorboard: bool = False      # ours: also write event files; not part of the run's args

    def record_args(self) -> dict:
        """`args` as records store it (lists, not tuples, like argparse's namespace). Our
        optional `idtest_fraction` appears only when set, so runs without it keep upstream's
        args (and job folders) byte for byte."""
        d = dataclasses.asdict(self)
        d["test_envs"] = list(self.test_envs)
        if not self.idtest_fraction:
            d.pop("idtest_fraction")
        d.pop("tensorboard")   # how the run is watched, not what it computes
        return d


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m domainbed_align.train", description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", type=str, default="")
    p.add_argument("--dataset", type=str, default=TrainConfig.dataset)
    p.add_argument("--algorithm", type=str, default=TrainConfig.algorithm)
    p.add_argument("--task", type=str, default=TrainConfig.task, choices=TASKS)
    p.add_argument("--hparams", type=str, help="JSON-serialized hparams dict, applied on top")
    p.add_argument("--hparams_seed", type=int, default=0, help="0: default hparams")
    p.add_argument("--trial_seed", type=int, default=0, help="seed for splits and random hparams")
    p.add_argument("--seed", type=int, default=0, help="seed for everything else")
    p.add_argument("--steps", type=int, default=None, help="default: the dataset's N_STEPS")
    p.add_argument("--checkpoint_freq", type=int, default=None, help="default: the dataset's")
    p.add_argument("--test_envs", type=int, nargs="+", default=[0])
    p.add_argument("--output_dir", type=str, default=TrainConfig.output_dir)
    p.add_argument("--holdout_fraction", type=float, default=0.2)
    p.add_argument("--uda_holdout_fraction", type=float, default=0.0)
    p.add_argument("--skip_model_save", action="store_true")
    p.add_argument("--save_model_every_checkpoint", action="store_true")
    p.add_argument("--mask_dir", type=str, default=None,
                   help="relevance-mask folder mirroring the image tree (image datasets)")
    p.add_argument("--idtest_fraction", type=float, default=0.0,
                   help="also hold out this fraction of each training domain as an ID test "
                        "split (env{i}_idtest_* in records), never used for training or "
                        "selection; 0 (default): DomainBed's two splits only")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write every record's numbers and each step's update() terms as "
                        "TensorBoard event files in --output_dir (pip install -e "
                        "\".[tensorboard]\")")
    return p


def parse_args(argv: Optional[List[str]] = None) -> TrainConfig:
    ns = build_parser().parse_args(argv)
    return TrainConfig(**{**vars(ns), "test_envs": tuple(ns.test_envs)})


def _parse_hparams_json(text: Optional[str]) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--hparams is not valid JSON ({e.msg} at char {e.pos}): {text!r}; "
                          f"example: --hparams '{{\"lr\": 1e-4}}'") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--hparams must be a JSON object like '{{\"lr\": 1e-4}}', got {text!r}")
    return value



def _mem_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1024.0**3
    import resource  # CPU runs: peak resident memory of this process
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0**2


def check_args(c: TrainConfig) -> None:
    """Arguments that are wrong whatever the data: refused before anything is written."""
    for flag in ("steps", "checkpoint_freq"):
        value = getattr(c, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag} must be a positive number of steps, got {value}; "
                              f"leave it out for the dataset's default")


def make_output_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create --output_dir {path} ({e.strerror}); pass a folder "
                          f"you can write") from None


class Preempted(Exception):
    """A stop was requested (SIGTERM/SIGUSR2); the checkpoint is saved, the run can resume."""

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.signum = signum


class Trainer:
    """One run as a callable; `request_stop()` makes it checkpoint and raise `Preempted`."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self._stop_signal: Optional[int] = None
        self.events = NoEventLog()
        self._ready = False
        self._resumable_from = 0   # next_step of the newest checkpoint on disk

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        self._stop_signal = signum

    # ------------------------------------------------------------------ set-up
    def is_done(self) -> bool:
        """`done` exists; raises DataError (one line: what to delete) when its result is damaged."""
        c = self.config
        if not os.path.exists(os.path.join(c.output_dir, "done")):
            return False
        problem = integrity.done_run_problem(c.output_dir, needs_model=not c.skip_model_save)
        if problem:
            raise DataError(problem)
        return True

    def setup(self) -> None:
        """Check every input (names, test_envs, hparams, data, masks) and build the dataset and
        the model. Writes nothing: a run refused on bad input leaves no folder and no file."""
        if not self._ready:
            self._setup()
            self._ready = True

    def _setup(self):
        c = self.config
        dataset_cls = get_dataset_class(c.dataset)
        algorithm_cls = get_algorithm_class(c.algorithm)
        self.domain_names = list(dataset_cls.environments(c.data_dir))
        n_envs = len(self.domain_names)
        bad = [t for t in c.test_envs if not 0 <= t < n_envs]
        if bad or not c.test_envs or len(set(c.test_envs)) != len(c.test_envs):
            raise ConfigError(f"--test_envs {' '.join(map(str, c.test_envs))} invalid for {c.dataset}: "
                              f"give distinct indices in 0..{n_envs - 1} "
                              f"({', '.join(f'{i}={e}' for i, e in enumerate(dataset_cls.environments(c.data_dir)))})")
        if len(c.test_envs) >= n_envs:
            raise ConfigError(f"--test_envs leaves no training domain for {c.dataset}")
        if c.task == "single_source" and len(c.test_envs) != n_envs - 1:
            raise ConfigError(f"--task single_source trains on one domain: pass the other "
                              f"{n_envs - 1} as --test_envs")
        if c.uda_holdout_fraction:
            raise ConfigError("--uda_holdout_fraction is not supported (no domain adaptation); use 0")
        if not 0 <= c.holdout_fraction < 1:
            raise ConfigError(f"--holdout_fraction must be in [0, 1), got {c.holdout_fraction}")
        if not (0 <= c.idtest_fraction and c.holdout_fraction + c.idtest_fraction < 1):
            raise ConfigError(f"--idtest_fraction must be >= 0 with --holdout_fraction + "
                              f"--idtest_fraction < 1 (some data must stay for training), got "
                              f"{c.idtest_fraction} + {c.holdout_fraction}")
        hparams = hparams_registry.run_hparams(c.algorithm, c.dataset, c.hparams_seed, c.trial_seed,
                                               _parse_hparams_json(c.hparams))
        self.hparams = hparams

        random.seed(c.seed)
        np.random.seed(c.seed)
        torch.manual_seed(c.seed)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        precision.configure_backends(hparams["precision"], self.device)  # cuDNN per precision

        kwargs = {"mask_dir": c.mask_dir} if c.mask_dir else {}
        if c.mask_dir and not hasattr(dataset_cls, "DOMAIN_DIRS"):
            raise ConfigError(f"--mask_dir applies to image-folder datasets; {c.dataset} has its own masks")
        require_masks(algorithm_cls, dataset_cls, c.mask_dir)  # before any image is read
        dataset = dataset_cls(c.data_dir, list(c.test_envs), hparams, **kwargs)
        self.dataset = dataset
        self.train_envs = [i for i in range(len(dataset)) if i not in c.test_envs]
        # per domain, split name -> indices (`idtest` on training domains when asked for)
        self.splits = [domain_splits(len(env), i, c.trial_seed, c.holdout_fraction,
                                     c.idtest_fraction, c.test_envs)
                       for i, env in enumerate(dataset.datasets)]
        self.n_steps = c.steps or dataset.N_STEPS
        self.checkpoint_freq = c.checkpoint_freq or dataset.CHECKPOINT_FREQ
        self.steps_per_epoch = min(len(s["in"]) / hparams["batch_size"] for s in self.splits)
        self.eval_views = [env.eval_view() if hasattr(env, "eval_view") else env for env in dataset.datasets]
        explain_n = hparams["explain_n"]
        self.explain = {}
        for i, parts in enumerate(self.splits):
            for name, idx in parts.items():
                self.explain[i, name] = (explain_subsample(len(idx), explain_n, c.trial_seed, i, name)
                                         if explain_n > 0 else None)
        self.algorithm = algorithm_cls(dataset.input_shape, dataset.num_classes,
                                       len(self.train_envs), hparams).to(self.device)

    # ------------------------------------------------------------------ checkpoints
    def _identity(self) -> dict:
        d = self.config.record_args()
        d.pop("output_dir")
        return d

    def _write(self, name: str, write, mode: str = "wb") -> None:
        """Write `<output_dir>/<name>` atomically with `write(f)`. A failed write (disk full,
        quota, read-only) leaves the previous file as it was and ends the run with one line."""
        path = os.path.join(self.config.output_dir, name)
        try:
            with atomic_open(path, mode) as f:
                write(f)
        except OSError as e:
            raise StorageError(
                f"cannot write {path} ({e.strerror or e}); the files written before are intact "
                f"(resumable from step {self._resumable_from}): free space in "
                f"{self.config.output_dir} and run the same command again to resume") from None

    def _write_torch(self, name: str, obj) -> None:
        # serialised in memory first: a full disk then fails as OSError (ENOSPC) in our
        # write, not as torch's "unexpected pos" RuntimeError from inside its zip writer
        buf = io.BytesIO()
        torch.save(obj, buf)
        self._write(name, lambda f: f.write(buf.getbuffer()))

    def _save_checkpoint(self, next_step: int, checkpoint_vals, records) -> None:
        self.events.flush()   # every step before next_step is on disk before the checkpoint
        state = {"next_step": next_step, "identity": self._identity(),
                 "algorithm": self.algorithm.state_dict(),
                 "optimizers": {k: o.state_dict() for k, o in self.algorithm.optimizers().items()},
                 "rng": rng_state(), "checkpoint_vals": as_json_types(dict(checkpoint_vals)),
                 "records": as_json_types(records)}
        self._write_torch(CHECKPOINT_FILE, state)
        self._resumable_from = next_step

    def _load_checkpoint(self):
        path = os.path.join(self.config.output_dir, CHECKPOINT_FILE)
        if not os.path.exists(path):
            return None
        try:  # weights_only: a tampered file on a shared disk cannot run code. CPU: the RNG
            # states must stay CPU tensors; load_state_dict copies weights to the device
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or not {"next_step", "identity", "records"} <= set(state):
                raise ValueError("not a checkpoint dict")
        except Exception as e:
            raise DataError(f"cannot read {path} ({type(e).__name__}); it is truncated, damaged or "
                            f"not a checkpoint of this version: delete it to restart the run from "
                            f"step 0 (the records are rewritten)") from e
        if state["identity"] != self._identity():
            diff = sorted(k for k in state["identity"] if state["identity"].get(k) != self._identity().get(k))
            raise ConfigError(f"{self.config.output_dir} holds a run with other arguments "
                              f"(differs in: {', '.join(diff)}); use another --output_dir")
        self.algorithm.load_state_dict(state["algorithm"])
        for k, opt in self.algorithm.optimizers().items():
            opt.load_state_dict(state["optimizers"][k])
        set_rng_state(state["rng"])
        self._resumable_from = state["next_step"]
        return state

    def _write_records(self, records) -> None:
        text = "".join(json_line(r) for r in records)
        self._write("results.jsonl", lambda f: f.write(text), mode="w")

    def _save_snapshot(self) -> None:
        """`explanations.npz`: a few explained images of the first test domain (see
        `evaluation.explanation_snapshot`), for saliency figures made without the model."""
        env = self.config.test_envs[0]
        positions = self.explain[env, "in"]
        if positions is None or len(positions) == 0:
            return
        from domainbed_align.evaluation import explanation_snapshot
        arrays = explanation_snapshot(self.algorithm, self.eval_views[env],
                                      np.asarray(self.splits[env]["in"])[positions], self.device)
        self._write(SNAPSHOT_FILE, lambda f: np.savez_compressed(f, test_env=np.int64(env), **arrays))

    def _save_model(self, name: str) -> None:
        c = self.config
        self._write_torch(name, {"args": c.record_args(), "model_input_shape": self.dataset.input_shape,
                                 "model_num_classes": self.dataset.num_classes,
                                 "model_num_domains": len(self.train_envs),
                                 "model_hparams": as_json_types(self.hparams),
                                 "model_dict": self.algorithm.state_dict()})

    # ------------------------------------------------------------------ the loop
    def _evaluate(self) -> dict:
        results = {}
        for i, parts in enumerate(self.splits):
            for name, idx in parts.items():
                metrics = evaluate_split(self.algorithm, self.eval_views[i], idx, self.explain[i, name],
                                         self.dataset.num_classes, self.device,
                                         num_workers=min(self.dataset.N_WORKERS, os.cpu_count() or 1),
                                         cue_region=getattr(self.dataset, "cue_region", None))
                results.update({f"env{i}_{name}_{k}": v for k, v in metrics.items()})
        return results

    def __call__(self) -> str:
        """Train to the end (or resume to it); returns the output folder."""
        c = self.config
        check_args(c)
        if self.is_done():
            print(f"{c.output_dir} is done; nothing to do")
            return c.output_dir
        self.setup()
        make_output_dir(c.output_dir)
        state = self._load_checkpoint()
        start_step = state["next_step"] if state else 0
        records = state["records"] if state else []
        checkpoint_vals = collections.defaultdict(list, state["checkpoint_vals"] if state else {})
        if state:
            self._write_records(records)  # a kill between checkpoint and records left them behind
            print(f"resuming at step {start_step} from {CHECKPOINT_FILE}")
        self.events = open_event_log(c.output_dir, start_step, c.tensorboard)

        needs_masks = self.algorithm.NEEDS_MASKS
        loaders_workers = loader_workers(len(self.train_envs))
        stream = train_batches([self.dataset[i] for i in self.train_envs],
                               [self.splits[i]["in"] for i in self.train_envs],
                               self.hparams["batch_size"], c.seed, start_step, loaders_workers,
                               class_balanced=self.hparams["class_balanced"],
                               pin_memory=self.device == "cuda")
        self.algorithm.train()
        from tqdm import tqdm
        bar = tqdm(range(start_step, self.n_steps), initial=start_step, total=self.n_steps,
                   disable=not sys.stderr.isatty(), desc=f"{c.algorithm} {c.dataset}")
        try:
            for step in bar:
                t0 = time.time()
                batches = [tuple(t.to(self.device, non_blocking=True) for t in (b if needs_masks else b[:2]))
                           for b in next(stream)]
                with precision.autocast(self.hparams["precision"], self.device):
                    step_vals = self.algorithm.update(batches)
                self.events.update(step, step_vals)
                checkpoint_vals["step_time"].append(time.time() - t0)
                for key, val in step_vals.items():
                    if not math.isfinite(val):
                        raise TrainingError(
                            f"{key} is {val} at step {step}; records up to step "
                            f"{records[-1]['step'] if records else 'none'} are kept; "
                            f"lower the learning rate (--hparams '{{\"lr\": ...}}') or check the data")
                    checkpoint_vals[key].append(val)

                last = step == self.n_steps - 1
                if step % self.checkpoint_freq == 0 or last:
                    record = {"step": step, "epoch": step / self.steps_per_epoch}
                    record.update({k: float(np.mean(v)) for k, v in checkpoint_vals.items()})
                    record.update(self._evaluate())
                    record["mem_gb"] = _mem_gb()
                    if c.dataset not in catalog.DATASET_ENVIRONMENTS:
                        # a dataset whose domains are its folders (DomainFolder): the table
                        # columns travel with the records; the others' records stay upstream's
                        record["domain_names"] = self.domain_names
                    record.update({"hparams": self.hparams, "args": c.record_args()})
                    records.append(record)
                    self.events.record(record)
                    checkpoint_vals = collections.defaultdict(list)
                    self._save_checkpoint(step + 1, checkpoint_vals, records)
                    self._write_records(records)
                    self._print_row(record)
                    if c.save_model_every_checkpoint:
                        self._save_model(f"model_step{step}.pkl")
                elif self._stop_signal is not None:
                    self._save_checkpoint(step + 1, checkpoint_vals, records)
                if self._stop_signal is not None and not last:
                    raise Preempted(f"stopped by signal {self._stop_signal} after step {step}; "
                                    f"checkpoint saved: run the same command again to resume",
                                    self._stop_signal)
        finally:
            stream.close()  # shuts the data-loader workers down now, also on error or pre-emption
            self.events.close()
        if not c.skip_model_save:
            self._save_model("model.pkl")
        self._save_snapshot()
        self._write("done", lambda f: f.write("done"), mode="w")
        with_ckpt = os.path.join(c.output_dir, CHECKPOINT_FILE)
        if os.path.exists(with_ckpt):
            os.remove(with_ckpt)  # done: the records and model.pkl are the result
        return c.output_dir

    def _print_row(self, record: dict) -> None:
        accs = "  ".join(f"{k[:-4]} {record[k]:.3f}" for k in sorted(record) if k.endswith("_acc"))
        loss = record.get("loss", float("nan"))
        print(f"step {record['step']:>6}  loss {loss:.4f}  {accs}", flush=True)


def run(config: TrainConfig, handle_signals: bool = True) -> str:
    """One run with DomainBed's out.txt / err.txt; returns the output folder.

    Raises `DomainBedAlignError` (its `error:` line already printed) or `Preempted`. One rule
    for files: a run refused before it starts (bad arguments, names, hparams, data or masks; a
    damaged finished result) writes nothing, not even its folder; once started, every line it
    prints, its `error:` line included, is also in out.txt / err.txt. With `handle_signals`,
    SIGTERM/SIGUSR2 checkpoint and stop the run; a scheduler that handles them itself
    (submitit) passes False.
    """
    trainer = Trainer(config)
    stdout, stderr = sys.stdout, sys.stderr
    previous = {}
    try:
        check_args(config)
        if not trainer.is_done():
            trainer.setup()   # every input checked before the folder is made
        make_output_dir(config.output_dir)
        sys.stdout = Tee(stdout, os.path.join(config.output_dir, "out.txt"))
        sys.stderr = Tee(stderr, os.path.join(config.output_dir, "err.txt"))
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGUSR2):
                previous[sig] = signal.signal(sig, lambda signum, frame: trainer.request_stop(signum))
        return trainer()
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        raise
    except DomainBedAlignError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for tee in (sys.stdout, sys.stderr):
            if isinstance(tee, Tee):
                tee.close()
        sys.stdout, sys.stderr = stdout, stderr


def main(argv: Optional[List[str]] = None) -> int:
    config = parse_args(argv)
    try:
        run(config)
        return 0
    except Preempted as e:
        return 128 + e.signum
    except DomainBedAlignError:
        return 2


if __name__ == "__main__":
    sys.exit(main())
