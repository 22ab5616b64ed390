"""The lane of sliced jobs (inference, gradients) of one task and model: a slice at a time, round robin.

Each job is ``samplers.work.SliceWork``: a computation that yields between small pieces; a slice runs pieces
for a time budget. Jobs of a lane take turns, a slice each, so a long job does not hold back a short one of the
same kind; lanes take turns by ``app.worker.fair``. A job can be dropped between slices (deadline, caller gone,
shutdown): its generator is closed and its tensors are released.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from app.jobs import Job
from app.worker.replies import Replies
from samplers.work import RowWork, SliceWork, Work


@dataclass
class Sliced:
    job: Job
    work: SliceWork
    memory: int  # bytes it holds while it runs (estimate)
    admitted: float = field(default_factory=time.time)


class SliceLane:
    def __init__(self) -> None:
        self.jobs: deque[Sliced] = deque()

    def __len__(self) -> int:
        return len(self.jobs)

    def serve(self, budget_s: float, replies: Replies, follow: Callable[[Job, Work], None]) -> bool:
        """One slice of the job whose turn it is; a job that finished (or failed) is answered and leaves the lane,
        or, if its work continues as other work (a candidate's certificate rows), is handed to ``follow``.
        True if one left."""
        head = self.jobs[0]
        try:
            done = head.work.advance(budget_s)
            if not done:
                self.jobs.rotate(-1)
                return False
            self.jobs.popleft()
            queue_ms = max(head.admitted - head.job.submitted, 0.0) * 1000
            out = head.work.respond(queue_ms, replies.device)
            if isinstance(out, RowWork | SliceWork):
                follow(head.job, out)
            else:
                replies.ok(head.job, out)
        except Exception as error:
            if self.jobs and self.jobs[0] is head:
                self.jobs.popleft()
            replies.fail(head.job, error)
        return True

    def drop(self, job_ids: set[str]) -> list[Sliced]:
        """Stop and remove these jobs; returns them."""
        dropped = [s for s in self.jobs if s.job.id in job_ids]
        for s in dropped:
            s.work.close()
            self.jobs.remove(s)
        return dropped
