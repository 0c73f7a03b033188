"""Progress lines with rate and ETA for long loops (evaluations, large-K estimates).

A `Progress` logs to the `msnvi_tf` logger at most every `every` seconds:

  <what>: 1200/3033 examples, 41.3 examples/s, ETA 0:00:44

the rate being the work done so far over the time since the `Progress` was made.
"""
import logging
import time
from typing import Optional

from msnvi_tf.runtime import training

__all__ = ["EVERY", "Progress"]

EVERY = 30.  # seconds between progress lines.
log = logging.getLogger("msnvi_tf")


class Progress:
  """Logs `done/total <unit>, rate, ETA` of a loop every `every` seconds.

  Args:
    total: the work of the whole loop in `unit` (None: unknown, no ETA).
    what: the prefix of each line (what is being computed).
    unit: the unit of `total` and of `update`'s argument.
    every: seconds between lines (None: `EVERY`).
  """

  def __init__(self, total: Optional[int], what: str, unit: str = "examples",
               every: Optional[float] = None):
    self.total, self.what, self.unit = total, what, unit
    self.every = EVERY if every is None else every
    self.start = self.last = time.perf_counter()
    self.lines = 0  # progress lines logged so far.

  def update(self, done: int):
    """Logs a line if `every` seconds passed since the last one and work is left."""
    now = time.perf_counter()
    if now - self.last < self.every or (self.total is not None and done >= self.total):
      return
    rate = done / (now - self.start)
    of = "" if self.total is None else f"/{self.total}"
    eta = ("" if self.total is None or not rate
           else f", ETA {training.format_time((self.total - done) / rate)}")
    log.info("%s: %d%s %s, %.1f %s/s%s", self.what, done, of, self.unit, rate, self.unit,
             eta)
    self.last = now
    self.lines += 1
