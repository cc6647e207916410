"""One contract, every backend: submit / poll / cancel / timeout / logs / collect / lost handles.

The same four jobs (succeed, exit 3, overrun a 3 s limit, get cancelled) go to the fake, local,
docker, ray and aws-batch backends; each must report the same states and failure reasons. The fake
follows a script (it is the unit-test double); the others run real processes or containers.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from referee.platform.core.backend import Backend
from referee.platform.core.jobs import FailureReason, JobSpec, JobState, Resources

OK = ("import os; print('hello-from-job', flush=True); "
      "ids = open(os.path.join(os.environ['REFEREE_INPUT'], 'ids.txt')).read(); "
      "open(os.path.join(os.environ['REFEREE_OUTPUT'], os.environ['REFEREE_OUTPUT_FILE']), 'w')"
      ".write('id,label\\n' + ids)")
FAIL = "import sys; print('boom-from-job', file=sys.stderr, flush=True); sys.exit(3)"
SLEEP = "import time; print('sleeping', flush=True); time.sleep(120)"
IDS = "a,1\nb,0\n"


@dataclass
class Subject:
    backend: Backend
    image: str | None  # None: commands run as local processes
    real_logs: bool = True  # the fake's logs are canned
    exit_code: int | None = 3  # the failing job's exit code as reported: moto's Batch drops it, the fake scripts 1

    def job(self, tmp: Path, n: int, code: str, timeout: float, input_dir: Path) -> JobSpec:
        out = tmp / f"s{n}" / "output"
        out.mkdir(parents=True)
        command = ["python3", "-c", code] if self.image else [sys.executable, "-c", code]
        return JobSpec(job_id=f"contract-s{n}-a1", submission_id=n, attempt=1, competition_id="contract",
                       output_dir=str(out), output_file="predictions.csv", image=self.image, command=command,
                       input_dir=str(input_dir), timeout_s=timeout,
                       resources=Resources(cpu=0.5, memory=256 * 2**20))


def _fake(request: Any) -> Subject:
    from referee.plugins.testing import FakeBackend
    script = {2: ["exited_nonzero"], 3: ["timed_out"]}
    return Subject(FakeBackend(script=script, output="id,label\n" + IDS, polls_to_finish=2), None, real_logs=False,
                   exit_code=1)


def _local(request: Any) -> Subject:
    from referee.platform.backends.local import LocalBackend
    return Subject(LocalBackend(), None)


def _image(request: Any) -> str:
    return request.getfixturevalue("base_image")


def _docker(request: Any) -> Subject:
    from referee.platform.backends.docker import DockerBackend
    return Subject(DockerBackend(slots=4), _image(request))


def _ray(request: Any) -> Subject:
    from test_ray_backend import start_local_ray

    from referee.platform.backends.ray import RayBackend
    image = _image(request)
    start_local_ray()
    return Subject(RayBackend(), image)


def _aws_batch(request: Any) -> Subject:
    from test_aws_batch import start_moto
    image = _image(request)
    return Subject(start_moto().backend(), image, exit_code=None)


SUBJECTS: dict[str, Callable[[Any], Subject]] = {
    "fake": _fake, "local": _local, "docker": _docker, "ray": _ray, "aws-batch": _aws_batch}


ENGINE_MARKS = {"docker": [pytest.mark.docker], "ray": [pytest.mark.docker, pytest.mark.ray],
                "aws-batch": [pytest.mark.docker, pytest.mark.aws]}


@pytest.fixture(params=[pytest.param(name, marks=ENGINE_MARKS.get(name, [])) for name in SUBJECTS])
def subject(request):
    s = SUBJECTS[request.param](request)
    yield s
    s.backend.close()


def test_backend_contract(subject, tmp_path):
    inp = tmp_path / "input"
    inp.mkdir()
    (inp / "ids.txt").write_text(IDS)
    jobs = {name: subject.job(tmp_path, n, code, timeout, inp) for n, (name, code, timeout) in enumerate(
        [("ok", OK, 60), ("fail", FAIL, 60), ("overrun", SLEEP, 3), ("cancel", SLEEP, 60)], start=1)}
    b = subject.backend
    h = {name: b.submit(job) for name, job in jobs.items()}
    assert len(set(h.values())) == 4 and all(isinstance(x, str) for x in h.values())

    end = time.monotonic() + 60
    while b.poll([h["cancel"]])[h["cancel"]].state not in (JobState.RUNNING, JobState.QUEUED):
        assert time.monotonic() < end
        time.sleep(0.1)
    time.sleep(0.5)
    b.cancel(h["cancel"])
    b.cancel(h["cancel"])  # idempotent

    end = time.monotonic() + 120
    while True:
        st = b.poll(list(h.values()))
        if all(s.state.final for s in st.values()):
            break
        assert time.monotonic() < end, f"not final: {st}"
        time.sleep(0.2)
    ok, fail, overrun, cancel = (st[h[k]] for k in ("ok", "fail", "overrun", "cancel"))

    assert ok.state == JobState.SUCCEEDED and ok.reason is None, ok
    out = Path(b.collect(h["ok"], jobs["ok"])) / "predictions.csv"
    assert out.read_text() == "id,label\n" + IDS  # it read its input and wrote its output
    assert fail.state == JobState.FAILED and fail.reason == FailureReason.EXITED_NONZERO, fail
    assert not fail.reason.is_infrastructure  # a submission's failure: never retried
    assert fail.exit_code == subject.exit_code, fail
    assert overrun.state == JobState.FAILED and overrun.reason == FailureReason.TIMED_OUT, overrun
    assert cancel.state == JobState.CANCELLED and cancel.reason == FailureReason.CANCELLED, cancel
    assert b.poll([h["ok"]])[h["ok"]] == ok  # a final status stays final
    if subject.real_logs:
        assert "hello-from-job" in b.logs(h["ok"])
        assert "boom-from-job" in b.logs(h["fail"])
        assert len(b.logs(h["ok"], tail=5)) <= 5
    else:
        assert b.logs(h["ok"]) == f"fake log for {h['ok']}\n"

    lost = b.poll(["referee-never-submitted"])["referee-never-submitted"]
    assert lost.state == JobState.FAILED and lost.reason == FailureReason.PLATFORM_ERROR
    for handle in h.values():
        b.cleanup(handle)
