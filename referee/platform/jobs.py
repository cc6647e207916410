"""JobRecord: the view of one backend job that job hooks (cost trackers) receive."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobRecord:
    id: int
    job_id: str
    submission_id: int
    competition_id: str
    team: str
    attempt: int
    backend: str
    state: str
    failure_reason: str | None
    cpu: float | None
    memory: int | None
    gpus: int
    instance_type: str | None
    node: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    spec: dict[str, Any]

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return max(0.0, (self.finished_at - self.started_at).total_seconds())
        return None

    @classmethod
    def load(cls, store: Any, job_row: int) -> "JobRecord":
        r = store.query("SELECT j.*, s.team, s.competition_id FROM jobs j JOIN submissions s "
                        "ON s.id = j.submission_id WHERE j.id=?", (job_row,))[0]
        spec = json.loads(r["spec_json"] or "{}")

        def t(v: str | None) -> dt.datetime | None:
            return dt.datetime.fromisoformat(v) if v else None

        return cls(id=r["id"], job_id=spec.get("job_id", f"job{r['id']}"), submission_id=r["submission_id"],
                   competition_id=r["competition_id"], team=r["team"], attempt=r["attempt"], backend=r["backend"],
                   state=r["state"], failure_reason=r["failure_reason"], cpu=r["cpu"], memory=r["memory"],
                   gpus=r["gpus"], instance_type=r["instance_type"], node=r["node"],
                   created_at=t(r["created_at"]), started_at=t(r["started_at"]),  # type: ignore[arg-type]
                   finished_at=t(r["finished_at"]), spec=spec)
