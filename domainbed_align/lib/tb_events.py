"""A run's scalars as TensorBoard event files in its folder (`train --tensorboard`).

Every step's `update()` terms go under `update/<name>`, every record's numbers under
`records/<key>`, so `tensorboard --logdir SWEEP` shows a live sweep (one run per job folder).
Needs only the `tensorboard` package (`pip install -e ".[tensorboard]"`), never torch; the
collector never reads these files.

Resume: the trainer flushes the events before each checkpoint, so every step before the
checkpoint's next step is on disk when the checkpoint is; steps after it may have been
written by the killed process and are done again. Opening the log for a resume at step S
rewrites the existing event files without their events at steps >= S, so each step is in
the files exactly once.
"""
import glob
import math
import os
import time
from typing import Dict

from domainbed_align.lib.errors import ConfigError

EVENTS_GLOB = "events.out.tfevents.*"
FLUSH_SECS = 30


def _tensorboard():
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as e:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install -e "
                          "\".[tensorboard]\" (or run without --tensorboard)") from e
    return Event, Summary, EventFileWriter


def prune(log_dir: str, first_step: int) -> int:
    """Drop the events at steps >= first_step from the event files in `log_dir` (each file
    rewritten beside itself, then renamed over it); returns how many were dropped."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    Event, _, _ = _tensorboard()
    from tensorboard.summary.writer.record_writer import RecordWriter
    dropped = 0
    for path in sorted(glob.glob(os.path.join(log_dir, EVENTS_GLOB))):
        kept, n = [], 0
        for raw in RawEventFileLoader(path).Load():
            n += 1
            event = Event.FromString(raw)
            if event.HasField("summary") and event.step >= first_step:
                continue
            kept.append(raw)
        if len(kept) == n:
            continue
        dropped += n - len(kept)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            writer = RecordWriter(f)
            for raw in kept:
                writer.write(raw)
            writer.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


class EventLog:
    """Scalars of one run; `update(step, values)`, `record(record)`, `flush()`, `close()`."""

    def __init__(self, log_dir: str, first_step: int = 0):
        Event, Summary, EventFileWriter = _tensorboard()
        self._event, self._summary = Event, Summary
        if first_step > 0 or glob.glob(os.path.join(log_dir, EVENTS_GLOB)):
            prune(log_dir, first_step)
        self._writer = EventFileWriter(log_dir, flush_secs=FLUSH_SECS)

    def scalars(self, step: int, values: Dict[str, float], prefix: str) -> None:
        tags = [self._summary.Value(tag=f"{prefix}/{k}", simple_value=float(v))
                for k, v in sorted(values.items())
                if isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(float(v))]
        if tags:
            self._writer.add_event(self._event(wall_time=time.time(), step=int(step),
                                               summary=self._summary(value=tags)))

    def update(self, step: int, values: Dict[str, float]) -> None:
        self.scalars(step, values, "update")

    def record(self, record: dict) -> None:
        self.scalars(record["step"], {k: v for k, v in record.items() if k != "step"}, "records")

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class NoEventLog:
    """What the trainer holds without --tensorboard: every call does nothing."""

    def update(self, step, values):
        pass

    def record(self, record):
        pass

    def flush(self):
        pass

    def close(self):
        pass


def open_event_log(log_dir: str, first_step: int, enabled: bool):
    return EventLog(log_dir, first_step) if enabled else NoEventLog()
