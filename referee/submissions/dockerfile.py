"""A Dockerfile parser that reads a file the way Docker's builder does, so a policy can judge it.

It follows the builder's own front end (moby/buildkit ``frontend/dockerfile/parser``): parser
directives at the top (``# escape=``, ``# syntax=``, ``# check=``), comments, line continuations with
the escape character (backslash, or backtick after ``# escape=```), comment and blank lines inside a
continuation, the split into instruction, ``--flags`` and arguments, JSON (exec) form versus shell
form, heredocs (``RUN <<EOF``) and ``ONBUILD`` sub-instructions. ``expand_word`` resolves ``ARG``
variables in a ``FROM`` the way the builder does, for the forms it supports.

Where two Docker versions read the same bytes differently (older builders know no heredocs and treat
a heredoc body as instructions; they drop only one carriage return per line; they stop reading
directives at ``# check=``), ``DockerfileError`` is raised instead of guessing: characters that only
some versions treat as white space, stray carriage returns and control characters are refused, so the
instructions seen here are the instructions every builder runs.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Mapping

MAX_DOCKERFILE_BYTES = 1 << 20
MAX_LINE_BYTES = 64 * 1024 - 1  # bufio.Scanner's limit in the builder: longer lines fail there

INSTRUCTIONS = ("add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label",
                "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir")
_HEREDOC_INSTRUCTIONS = ("add", "copy", "run")
_DIRECTIVES = ("syntax", "escape", "check")
_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*\Z")
_HEREDOC_WORD = re.compile(r"(\d*)<<(-?)[ \t]*([^<]*)\Z")
_WHITESPACE = re.compile(r"[ \t]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DockerfileError(ValueError):
    """The Dockerfile cannot be read unambiguously; ``line`` is 1-based (None: the whole file)."""

    def __init__(self, message: str, line: int | None = None, rule: str = "syntax"):
        super().__init__(message)
        self.line = line
        self.rule = rule


@dataclass(frozen=True)
class Heredoc:
    name: str
    chomp: bool  # <<- strips leading tabs
    expand: bool  # an unquoted name: the body's variables are expanded
    body: str


@dataclass(slots=True)
class Instruction:
    """One instruction (a logical line). ``args`` are the JSON items in exec form, the whitespace-
    separated words for FROM/COPY/ADD/VOLUME/EXPOSE, the words for ARG/ENV/LABEL, otherwise the
    rest of the line as one string."""

    keyword: str  # lower case: "from", "run", ...
    flags: tuple[str, ...]  # builder flags without the leading "--", e.g. ("from=build",)
    args: tuple[str, ...]
    json_form: bool
    original: str
    line: int  # first physical line
    end_line: int  # last physical line (heredoc bodies included)
    heredocs: tuple[Heredoc, ...] = ()
    sub: "Instruction | None" = None  # the instruction an ONBUILD registers

    def flag(self, name: str) -> str | None:
        """The value of ``--name=value`` (the last one wins, as in the builder); None when absent."""
        found = None
        for f in self.flags:
            key, sep, value = f.partition("=")
            if key == name:
                found = value if sep else ""
        return found

    def flag_names(self) -> list[str]:
        return [f.partition("=")[0] for f in self.flags]


@dataclass(frozen=True)
class Dockerfile:
    instructions: tuple[Instruction, ...]
    escape: str = "\\"
    directives: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (value, line)


# -- reading the file ------------------------------------------------------------------------------
def parse_dockerfile(data: bytes | str) -> Dockerfile:
    """Parse a Dockerfile; raises ``DockerfileError`` naming the line of the first problem."""
    if isinstance(data, bytes):
        if len(data) > MAX_DOCKERFILE_BYTES:
            raise DockerfileError(f"the Dockerfile is {len(data):,} bytes, over the limit of "
                                  f"{MAX_DOCKERFILE_BYTES:,}", rule="size")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DockerfileError(f"byte {exc.start} is not valid UTF-8", data[:exc.start].count(b"\n") + 1,
                                  rule="characters") from None
    else:
        text = data
    lines = _physical_lines(text)
    return _Parser(lines).parse()


def _physical_lines(text: str) -> list[str]:
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out = []
    for number, line in enumerate(lines, start=1):
        if line.endswith("\r"):
            line = line[:-1]
        if len(line) > MAX_LINE_BYTES // 4 and len(line.encode("utf-8")) > MAX_LINE_BYTES:
            raise DockerfileError(f"the line is longer than {MAX_LINE_BYTES:,} bytes (the builder's limit)", number,
                                  rule="characters")
        bad = _first_ambiguous_character(line)
        if bad is not None:
            what = "a carriage return inside the line" if bad == "\r" else \
                f"the character U+{ord(bad):04X} ({unicodedata.name(bad, 'a control character')})"
            raise DockerfileError(f"{what}: Docker versions disagree on what it means, so it is not accepted "
                                  "(use plain spaces, tabs and newlines)", number, rule="characters")
        out.append(line)
    return out


def _first_ambiguous_character(line: str) -> str | None:
    """A control character or a white space other than space and tab: builders disagree on those
    (Go's unicode.IsSpace, its regexp's \\s and Python's str.isspace are three different sets)."""
    if line.isascii() and line.replace("\t", " ").isprintable():
        return None
    for ch in line:
        if ch not in " \t" and unicodedata.category(ch) in ("Cc", "Zs", "Zl", "Zp"):
            return ch
    return None


def _is_comment(line: str) -> bool:
    return line.lstrip(" \t").startswith("#")


class _Parser:
    def __init__(self, lines: list[str]):
        self.lines = lines
        self.pos = 0
        self.escape = "\\"
        self.continuation = _continuation_regex("\\")
        self.directives: dict[str, tuple[str, int]] = {}
        self.directives_done = False

    def parse(self) -> Dockerfile:
        out: list[Instruction] = []
        while self.pos < len(self.lines):
            raw = self.lines[self.pos]
            self.pos += 1
            number = self.pos
            content = raw.lstrip(" \t")
            self._directive(content, number)
            if content.startswith("#"):
                content = ""
            segment, end_of_line = self._trim_continuation(content)
            if end_of_line and segment == "":
                continue
            parts = [segment]
            while not end_of_line and self.pos < len(self.lines):
                raw = self.lines[self.pos]
                self.pos += 1
                if _is_comment(raw) or raw.strip(" \t") == "":
                    continue  # comment and empty lines inside a continuation are skipped
                segment, end_of_line = self._trim_continuation(raw)
                parts.append(segment)
            inst = self._instruction("".join(parts), number)
            inst.heredocs = self._heredocs(inst)
            inst.end_line = self.pos
            out.append(inst)
        if not out:
            raise DockerfileError("the Dockerfile has no instructions", rule="syntax")
        return Dockerfile(tuple(out), self.escape, dict(self.directives))

    # parser directives: only before anything else, each at most once
    def _directive(self, content: str, number: int) -> None:
        if self.directives_done:
            return
        if not content.startswith("#"):
            self.directives_done = True
            return
        m = _DIRECTIVE.match(content[1:].lstrip(" \t"))
        if not m or m.group(1).lower() not in _DIRECTIVES:
            self.directives_done = True
            return
        name, value = m.group(1).lower(), m.group(2)
        if name in self.directives:
            raise DockerfileError(f"only one {name} parser directive can be used", number, rule="directives")
        self.directives[name] = (value, number)
        if name == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(f"invalid escape token {value!r}: use ` or \\", number, rule="directives")
            self.escape = value
            self.continuation = _continuation_regex(value)

    def _trim_continuation(self, line: str) -> tuple[str, bool]:
        if self.continuation.search(line):
            return self.continuation.sub(r"\1", line), False
        return line, True

    def _instruction(self, logical: str, number: int) -> Instruction:
        text = logical.strip(" \t")
        head = _WHITESPACE.split(text, maxsplit=1)
        keyword = head[0].lower()
        flags: list[str] = []
        rest = ""
        if len(head) == 2:
            rest, flags = _extract_flags(head[1])
            rest = rest.strip(" \t")
        if keyword not in INSTRUCTIONS:
            raise DockerfileError(f"unknown instruction {head[0]!r}", number, rule="instructions")
        args, json_form, sub = self._arguments(keyword, rest, number)
        return Instruction(keyword, tuple(flags), args, json_form, logical, number, number, (), sub)

    def _arguments(self, keyword: str, rest: str, number: int) -> tuple[tuple[str, ...], bool, Instruction | None]:
        if keyword == "onbuild":
            if not rest:
                return (), False, None
            sub = self._instruction(rest, number)
            if sub.keyword in ("onbuild", "from", "maintainer"):
                raise DockerfileError(f"{sub.keyword.upper()} is not allowed as an ONBUILD trigger", number)
            return (rest,), False, sub
        if keyword in ("add", "copy", "volume"):
            items = _maybe_json(rest, number)
            if items is not None:
                return tuple(items), True, None
            return tuple(w for w in _WHITESPACE.split(rest) if w), False, None
        if keyword in ("cmd", "entrypoint", "run", "shell"):
            if not rest:
                return (), False, None
            items = _maybe_json(rest, number)
            return (tuple(items), True, None) if items is not None else ((rest,), False, None)
        if keyword in ("from", "expose"):
            return tuple(w for w in _WHITESPACE.split(rest) if w), False, None
        if keyword in ("arg", "env", "label"):
            return tuple(parse_words(rest, self.escape)), False, None
        if keyword == "healthcheck":
            kind, _, cmd = rest.partition(" ")
            items = _maybe_json(cmd.lstrip(" \t"), number) if cmd.strip() else None
            return ((kind, *items) if items is not None else (kind, cmd.strip())), items is not None, None
        return ((rest,) if rest else ()), False, None

    def _heredocs(self, inst: Instruction) -> tuple[Heredoc, ...]:
        target = inst.sub if inst.keyword == "onbuild" and inst.sub is not None else inst
        if target.keyword not in _HEREDOC_INSTRUCTIONS or target.json_form or "<<" not in inst.original:
            return ()
        docs = []
        # the newer parsers split the line with backslash as escape whatever the directive says:
        # words seen either way count
        words = parse_words(inst.original, "\\")
        if self.escape != "\\":
            words += [w for w in parse_words(inst.original, self.escape) if w not in words]
        for word in words:
            m = _HEREDOC_WORD.match(word)
            if not m or not m.group(3):
                continue
            name = _unquote(m.group(3))
            chomp = m.group(2) == "-"
            body: list[str] = []
            while True:
                if self.pos >= len(self.lines):
                    raise DockerfileError(f"unterminated heredoc <<{name}", inst.line, rule="heredoc")
                raw = self.lines[self.pos]
                self.pos += 1
                if (raw.lstrip("\t") if chomp else raw) == name:
                    break
                body.append(raw + "\n")
            docs.append(Heredoc(name, chomp, name == m.group(3), "".join(body)))
        return tuple(docs)


def _continuation_regex(escape: str) -> re.Pattern[str]:
    e = re.escape(escape)
    return re.compile(rf"([^{e}]){e}[ \t]*\Z|\A{e}[ \t]*\Z")


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """Leading ``--flag[=value]`` words (quotes and backslashes as the builder reads them), then the rest."""
    words: list[str] = []
    word = ""
    phase = "spaces"
    quote = ""
    blank_ok = False
    pos = 0
    n = len(line)
    while pos <= n:
        ch = line[pos] if pos < n else ""
        if phase == "spaces":
            if pos == n:
                break
            if ch in " \t":
                pos += 1
                continue
            if not line.startswith("--", pos):
                return line[pos:], [w[2:] for w in words]
            phase = "word"
        if phase in ("word", "quote") and pos == n:
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if phase == "word":
            if ch in " \t":
                phase = "spaces"
                if word == "--":
                    return line[pos:], [w[2:] for w in words]
                if blank_ok or word:
                    words.append(word)
                word, blank_ok = "", False
                pos += 1
                continue
            if ch in "'\"":
                quote, blank_ok, phase = ch, True, "quote"
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word += ch
            pos += 1
            continue
        if phase == "quote":
            if ch == quote:
                phase = "word"
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    phase = "word"
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word += ch
            pos += 1
    return "", [w[2:] for w in words]


def _maybe_json(rest: str, number: int) -> list[str] | None:
    """The items of a JSON array of strings, None for shell form; an array with a non-string is an error."""
    rest = rest.lstrip(" \t")
    if not rest.startswith("["):
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(rest)  # like Go's Decoder: trailing text is ignored
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise DockerfileError("when using JSON array syntax, arrays must be comprised of strings only", number)
    return value


def parse_words(rest: str, escape: str = "\\") -> list[str]:
    """Words separated by white space, keeping quotes and escapes (the builder strips them later)."""
    if "'" not in rest and '"' not in rest and escape not in rest:
        return [w for w in _WHITESPACE.split(rest) if w]  # nothing to keep together
    words: list[str] = []
    word = ""
    phase = "spaces"
    quote = ""
    blank_ok = False
    pos = 0
    n = len(rest)
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if phase == "spaces":
            if pos == n:
                break
            if ch in " \t":
                pos += 1
                continue
            phase = "word"
        if phase in ("word", "quote") and pos == n:
            if blank_ok or word:
                words.append(word)
            break
        if phase == "word":
            if ch in " \t":
                phase = "spaces"
                if blank_ok or word:
                    words.append(word)
                word, blank_ok = "", False
                pos += 1
                continue
            if ch in "'\"":
                quote, blank_ok, phase = ch, True, "quote"
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                word += ch
                pos += 1
                ch = rest[pos]
            word += ch
            pos += 1
            continue
        if phase == "quote":
            if ch == quote:
                phase = "word"
            if ch == escape and quote != "'":
                if pos + 1 == n:
                    phase = "word"
                    pos += 1
                    continue
                word += ch
                pos += 1
                ch = rest[pos]
            word += ch
            pos += 1
    return words


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"":
        return word[1:-1]
    return word


# -- variables -------------------------------------------------------------------------------------
class ExpansionError(ValueError):
    """A word uses shell syntax that ``expand_word`` does not resolve (so its value is not certain)."""


def expand_word(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Expand one word the way the builder expands ``FROM`` and ``ARG`` values.

    Supported: plain text, 'single' and "double" quotes, ``$NAME``, ``${NAME}``, ``${NAME:-word}``,
    ``${NAME-word}``, ``${NAME:+word}`` and ``${NAME+word}`` with a plain ``word``. Unset names expand
    to nothing. Anything else (escapes, nested expansions, ``${NAME%...}``, command substitution)
    raises ``ExpansionError``: a value that is not certain is not judged.
    """
    out: list[str] = []
    pos, n = 0, len(word)
    quote = ""
    while pos < n:
        ch = word[pos]
        if ch == escape:
            raise ExpansionError(f"the escape character {escape!r} in {word!r}")
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                out.append(ch)
            pos += 1
            continue
        if ch in "'\"" and (not quote or ch == quote):
            quote = "" if quote else ch
            pos += 1
            continue
        if ch == "$":
            value, pos = _dollar(word, pos + 1, env)
            out.append(value)
            continue
        out.append(ch)
        pos += 1
    if quote:
        raise ExpansionError(f"an unterminated quote in {word!r}")
    return "".join(out)


def _dollar(word: str, pos: int, env: Mapping[str, str]) -> tuple[str, int]:
    if pos < len(word) and word[pos] == "{":
        end = word.find("}", pos)
        if end < 0:
            raise ExpansionError(f"an unterminated ${{ in {word!r}")
        inner = word[pos + 1:end]
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^${}'\"\\`]*))?", inner)
        if not m:
            raise ExpansionError(f"${{{inner}}} in {word!r}")
        name, op, alt = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op is None:
            return value or "", end + 1
        is_set = value is not None and (value != "" or not op.startswith(":"))
        if op.endswith("-"):
            return (value if is_set else alt) or "", end + 1
        return (alt if is_set else ""), end + 1
    m = _NAME.match(word, pos)
    if not m:
        raise ExpansionError(f"a $ that is not followed by a variable name in {word!r}")
    return env.get(m.group(0)) or "", m.end()


def global_arg_values(dockerfile: Dockerfile) -> dict[str, str | None]:
    """Raw default values of the ARGs before the first FROM (None: declared without a default),
    in declaration order; ``expand_word`` resolves them."""
    values: dict[str, str | None] = {}
    for inst in dockerfile.instructions:
        if inst.keyword == "from":
            break
        if inst.keyword == "arg":
            for word in inst.args:
                name, sep, value = word.partition("=")
                values[name] = value if sep else None
    return values
