"""The build policy: what a submitted Dockerfile may ask of the builder, checked before anything runs.

A Dockerfile is an instruction to the host's Docker daemon, which fetches ``ADD`` URLs and ``FROM``
images itself (outside any build network setting) and resolves ``FROM``/``COPY --from`` against every
image it holds, other teams' included. So the policy allows only:

- ``FROM`` an image on the host's allow-list (pinned by digest; by default referee's base images) or an
  earlier stage of the same Dockerfile, written literally or through ``ARG`` defaults;
- ``COPY --from`` an earlier stage (by name or index) and nothing else;
- ``ADD`` of files from the build context only (no URLs, no git, no variables);
- no ``RUN`` flags (``--mount`` reads other images and caches), no ``ONBUILD``, no heredocs (older
  builders run a heredoc's body as instructions), no ``# syntax=`` (it pulls a frontend image);
- no ``VOLUME`` inside the sandbox's input or output mounts.

Every refusal names the line and the rule (``SubmissionRejected`` with ``code="build_refused"``).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Mapping

from referee.platform.core.errors import SubmissionRejected
from referee.platform.core.text import safe_text
from referee.submissions.dockerfile import (
    Dockerfile,
    DockerfileError,
    ExpansionError,
    Instruction,
    expand_word,
    global_arg_values,
    parse_dockerfile,
)

REFUSED = "build_refused"
_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*\Z")
_REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://|^git@|^[^/\s]+@[^/\s]+:|^github\.com/")
_COPY_FLAGS = ("from", "chown", "chmod")
_ADD_FLAGS = ("chown", "chmod")
RULES = {
    "characters": "only plain spaces, tabs and newlines as white space, no control characters",
    "directives": "parser directives: an escape directive only on the first line, no syntax directive",
    "syntax": "a Dockerfile the builder can read",
    "size": "a Dockerfile of at most 1 MiB",
    "instructions": "known instructions only, starting with FROM (ARG may come first)",
    "from-allowed": "FROM only an allowed base image or an earlier stage",
    "from-flags": "FROM takes no flags",
    "stage-name": "stage names are letters, digits, '-', '_' and '.'",
    "copy-from": "COPY --from only an earlier stage of this Dockerfile",
    "flags": "COPY takes --from, --chown and --chmod; ADD takes --chown and --chmod",
    "add-remote": "ADD copies files from the build context only (no URL or git sources)",
    "add-variables": "ADD sources are written literally (no $variables)",
    "run-flags": "RUN takes no flags (no --mount, --network or --security)",
    "onbuild": "no ONBUILD triggers",
    "heredoc": "no heredocs (<<EOF)",
    "volume": "no VOLUME inside the sandbox's input or output directory",
}


@dataclass
class Stage:
    index: int
    name: str | None
    base: str  # an allowed base reference, or "stage:<index>"
    line: int


@dataclass
class BuildPlan:
    """What a Dockerfile that passed the policy will build from."""

    stages: list[Stage] = field(default_factory=list)
    bases: list[str] = field(default_factory=list)  # the allowed base references it uses, in order
    escape: str = "\\"


def normalize_reference(ref: str) -> str:
    """An image reference in the form the engine compares: ``docker.io/`` dropped, ``:latest`` added."""
    ref = ref.strip()
    for prefix in ("docker.io/", "index.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
            break
    if ref.startswith("library/") and ref.count("/") == 1:
        ref = ref[len("library/"):]
    name, at, digest = ref.partition("@")
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name + at + digest


def refusal(message: str, line: int | None, rule: str, source: str, hint: str | None = None) -> SubmissionRejected:
    """A policy refusal: the line, the rule, and what to write instead."""
    text = f"{message} (rule {rule}: {RULES.get(rule, rule)})"
    return SubmissionRejected(text, line=line, source=source, hint=hint, code=REFUSED)


def check_build_policy(dockerfile: bytes | str, allowed: Mapping[str, str], *, source: str = "Dockerfile",
                       protected_dirs: tuple[str, ...] = ()) -> BuildPlan:
    """Parse a Dockerfile and check it against the policy; the plan of what it builds, or a refusal.

    ``allowed`` maps the allowed base references to their pinned image ids (shown in hints);
    ``protected_dirs`` are the sandbox mounts no ``VOLUME`` may cover.
    """
    try:
        parsed = parse_dockerfile(dockerfile)
    except DockerfileError as exc:
        raise refusal(str(exc), exc.line, exc.rule, source) from None
    return _Checker(parsed, allowed, source, protected_dirs).run()


class _Checker:
    def __init__(self, parsed: Dockerfile, allowed: Mapping[str, str], source: str, protected: tuple[str, ...]):
        self.parsed = parsed
        self.allowed = {normalize_reference(ref): ref for ref in allowed}
        self.pins = dict(allowed)
        self.source = source
        self.protected = tuple(p.rstrip("/") for p in protected)
        self.plan = BuildPlan(escape=parsed.escape)
        self.names: dict[str, int] = {}

    def refuse(self, message: str, line: int | None, rule: str, hint: str | None = None) -> SubmissionRejected:
        return refusal(message, line, rule, self.source, hint)

    def allowed_list(self) -> str:
        return ", ".join(sorted(self.pins)) or "(none: the host allows no base image)"

    def run(self) -> BuildPlan:
        self.directives()
        seen_from = False
        for inst in self.parsed.instructions:
            if not seen_from and inst.keyword not in ("from", "arg"):
                raise self.refuse(f"{inst.keyword.upper()} before the first FROM", inst.line, "instructions",
                                  "start the Dockerfile with FROM (only ARG may come before it)")
            if inst.heredocs:
                raise self.refuse("a heredoc (<<)", inst.line, "heredoc",
                                  "put the text in a file in the build context and COPY it")
            check = getattr(self, f"check_{inst.keyword}", None)
            if check is not None:
                check(inst)
            seen_from = seen_from or inst.keyword == "from"
        return self.plan

    def directives(self) -> None:
        d = self.parsed.directives
        if "syntax" in d:
            raise self.refuse(f"the syntax directive {_show(d['syntax'][0])}", d["syntax"][1], "directives",
                              "remove the '# syntax=' line: it makes the builder fetch a frontend image")
        if "escape" in d and d["escape"][1] != 1:
            raise self.refuse("an escape directive after another directive", d["escape"][1], "directives",
                              "put '# escape=...' on the first line of the Dockerfile")

    # -- instructions --------------------------------------------------------------------------------
    def check_from(self, inst: Instruction) -> None:
        if inst.flags:
            raise self.refuse(f"FROM --{inst.flag_names()[0]}", inst.line, "from-flags",
                              "remove the flag: images are built for this engine's platform")
        args = inst.args
        if len(args) not in (1, 3) or (len(args) == 3 and args[1].lower() != "as"):
            raise self.refuse("FROM needs one image, optionally followed by 'AS name'", inst.line, "syntax")
        index = len(self.plan.stages)
        name = None
        if len(args) == 3:
            name = args[2].lower()
            if not _STAGE_NAME.match(name):
                raise self.refuse(f"invalid stage name {_show(args[2])}", inst.line, "stage-name")
            if name in self.names:
                raise self.refuse(f"the stage name {_show(name)} is used twice", inst.line, "stage-name")
        image = self.resolve_from(args[0], inst)
        if image.lower() in self.names:
            base = f"stage:{self.names[image.lower()]}"
        else:
            base = self.allowed_base(image, inst)
            if base not in self.plan.bases:
                self.plan.bases.append(base)
        self.plan.stages.append(Stage(index, name, base, inst.line))
        if name is not None:
            self.names[name] = index

    def resolve_from(self, word: str, inst: Instruction) -> str:
        if "$" not in word and "'" not in word and '"' not in word and self.parsed.escape not in word:
            return word
        env: dict[str, str] = {}
        try:
            for key, raw in global_arg_values(self.parsed).items():
                if raw is not None:
                    env[key] = expand_word(raw, env, self.parsed.escape)
            return expand_word(word, env, self.parsed.escape)
        except ExpansionError as exc:
            raise self.refuse(f"FROM {_show(word)} cannot be resolved for certain ({exc})", inst.line,
                              "from-allowed", "write the base image literally, or through a plain "
                                              "ARG NAME=value before the first FROM") from None

    def allowed_base(self, image: str, inst: Instruction) -> str:
        norm = normalize_reference(image)
        if "@" in norm:
            name = norm.split("@", 1)[0]
            if name in self.allowed:
                ref = self.allowed[name]
                raise self.refuse(f"FROM {_show(image)} names a digest", inst.line, "from-allowed",
                                  f"write FROM {ref}: the host pins it to {self.pins[ref] or 'its recorded id'}")
        if norm in self.allowed:
            return self.allowed[norm]
        earlier = f"; earlier stages: {', '.join(sorted(self.names))}" if self.names else ""
        raise self.refuse(f"FROM {_show(image)} is not an allowed base image", inst.line, "from-allowed",
                          f"build FROM one of: {self.allowed_list()}{earlier}")

    def check_copy(self, inst: Instruction) -> None:
        self.known_flags(inst, _COPY_FLAGS)
        source = inst.flag("from")
        if source is None:
            return
        if "$" in source:
            raise self.refuse(f"COPY --from={_show(source)} uses a variable", inst.line, "copy-from",
                              "name the earlier stage literally")
        current = len(self.plan.stages) - 1
        if source.isdigit() and int(source) < current:
            return
        if source.lower() in self.names and self.names[source.lower()] < current:
            return
        stages = ", ".join(sorted(self.names)) or "none are named"
        raise self.refuse(f"COPY --from={_show(source)} is not an earlier stage of this Dockerfile", inst.line,
                          "copy-from", f"copy from an earlier stage by name or index (named stages: {stages})")

    def check_add(self, inst: Instruction) -> None:
        self.known_flags(inst, _ADD_FLAGS)
        for src in inst.args[:-1]:
            if "$" in src:
                raise self.refuse(f"ADD source {_show(src)} uses a variable", inst.line, "add-variables",
                                  "write the path in the build context literally")
            if _REMOTE.search(src):
                raise self.refuse(f"ADD {_show(src)} fetches from the network", inst.line, "add-remote",
                                  "put the file in the build context and COPY it; builds have no network")

    def check_run(self, inst: Instruction) -> None:
        if inst.flags:
            raise self.refuse(f"RUN --{_show(inst.flags[0])}", inst.line, "run-flags",
                              "remove the flag; vendor what the build needs into the context")

    def check_onbuild(self, inst: Instruction) -> None:
        raise self.refuse("ONBUILD", inst.line, "onbuild", "run the step in this Dockerfile instead")

    def check_volume(self, inst: Instruction) -> None:
        for path in inst.args:
            if "$" in path:
                continue  # resolved by the image check at intake
            clash = volume_clash(path, self.protected)
            if clash:
                raise self.refuse(f"VOLUME {_show(path)} {clash}", inst.line, "volume",
                                  "remove the VOLUME line: the sandbox mounts the inputs and the output there")

    def known_flags(self, inst: Instruction, allowed: tuple[str, ...]) -> None:
        for name in inst.flag_names():
            if name not in allowed:
                raise self.refuse(f"{inst.keyword.upper()} --{name}", inst.line, "flags",
                                  f"{inst.keyword.upper()} takes only {', '.join('--' + a for a in allowed)}")


def volume_clash(path: str, protected: tuple[str, ...]) -> str | None:
    """How a VOLUME path collides with a sandbox mount (equal to it or inside it), or None."""
    norm = posixpath.normpath("/" + path.strip().strip('"').lstrip("/"))
    for mount in protected:
        if norm == mount:
            return f"is the sandbox's {mount} mount"
        if norm.startswith(mount + "/"):
            return f"is inside the sandbox's {mount} mount"
    return None


def _show(value: str) -> str:
    """A fragment of the team's Dockerfile inside a message: short, control characters visible."""
    return safe_text(value, limit=80)
