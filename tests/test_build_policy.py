"""The Dockerfile parser and the build policy, without an engine: every refusal names its line and rule."""

from __future__ import annotations

import pytest

from referee.platform.core.errors import SubmissionRejected
from referee.submissions.build_policy import check_build_policy, normalize_reference
from referee.submissions.dockerfile import DockerfileError, expand_word, parse_dockerfile

pytestmark = pytest.mark.hostile

BASE = "referee/base-python:bookworm"
ALLOWED = {BASE: "sha256:" + "a" * 64}
PROTECTED = ("/data/input", "/data/output")


def check(text: str):
    return check_build_policy(text.encode(), ALLOWED, source="sub/Dockerfile", protected_dirs=PROTECTED)


def refused(text: str) -> SubmissionRejected:
    with pytest.raises(SubmissionRejected) as err:
        check(text)
    assert err.value.code == "build_refused"
    return err.value


# -- the parser ------------------------------------------------------------------------------------
def test_continuations_comments_and_forms():
    df = parse_dockerfile(
        "# a comment\n"
        "FROM base AS build\n"
        "RUN echo a \\\n"
        "  # a comment inside the continuation is skipped\n"
        "\n"
        "  && echo b\n"
        'COPY --from=build --chown="1:1" ["a b", "/c"]\n'
        "CMD python3 x.py\n"
        'ENTRYPOINT ["python3"] trailing text is ignored, as the builder does\n')
    kinds = [(i.keyword, i.line, i.end_line) for i in df.instructions]
    assert kinds == [("from", 2, 2), ("run", 3, 6), ("copy", 7, 7), ("cmd", 8, 8), ("entrypoint", 9, 9)]
    run, copy, cmd, entry = df.instructions[1:]
    assert run.args == ("echo a   && echo b",) and not run.json_form
    assert copy.flags == ("from=build", "chown=1:1") and copy.args == ("a b", "/c") and copy.json_form
    assert cmd.args == ("python3 x.py",) and entry.args == ("python3",) and entry.json_form


def test_escape_directive_switches_the_continuation_character():
    df = parse_dockerfile("# escape=`\nFROM base\nRUN dir c:\\ `\n  && echo done\n")
    assert df.escape == "`" and df.instructions[1].args == ("dir c:\\   && echo done",)
    # after a backslash escape, a backtick is an ordinary character
    df = parse_dockerfile("FROM base\nRUN echo `\nFROM other\n")
    assert [i.keyword for i in df.instructions] == ["from", "run", "from"]


def test_an_escaped_escape_at_the_end_does_not_continue():
    df = parse_dockerfile("FROM base\nRUN echo \\\\\nCOPY a b\n")
    assert [i.keyword for i in df.instructions] == ["from", "run", "copy"]


def test_heredocs_are_read_as_bodies():
    df = parse_dockerfile("FROM base\nRUN <<EOF cat\nFROM evil\nEOF\nCOPY <<-END /x\n\tbody\n\tEND\nCMD x\n")
    run, copy = df.instructions[1], df.instructions[2]
    assert run.heredocs[0].name == "EOF" and run.heredocs[0].body == "FROM evil\n" and run.end_line == 4
    assert copy.heredocs[0].chomp and copy.end_line == 7
    assert [i.keyword for i in df.instructions] == ["from", "run", "copy", "cmd"]


@pytest.mark.parametrize("data,line", [
    (b"FROM a\rFROM b\n", 1),  # older builders keep this carriage return, newer ones do not
    (b"FROM a\nRUN x\xc2\xa0y\n", 2),  # a no-break space is white space only to some readers
    (b"FROM a\n\x0bRUN x\n", 2),
    (b"FROM a\nRUN \xff\n", 2),
    (b"FROM a\nFROB x\n", 2),
])
def test_ambiguous_or_unreadable_files_are_errors(data, line):
    with pytest.raises(DockerfileError) as err:
        parse_dockerfile(data)
    assert err.value.line == line


def test_expand_word():
    env = {"BASE": "img:1", "EMPTY": ""}
    assert expand_word("${BASE}", env) == "img:1" and expand_word("$BASE", env) == "img:1"
    assert expand_word('"${NOPE:-x/y:2}"', env) == "x/y:2" and expand_word("${EMPTY:-d}", env) == "d"
    assert expand_word("${EMPTY-d}", env) == "" and expand_word("${BASE:+alt}", env) == "alt"
    assert expand_word("'$BASE'", env) == "$BASE"
    for word in ("${BASE%:*}", "$(cat x)", "a\\b", "${A:-$B}", '"open'):
        with pytest.raises(ValueError):
            expand_word(word, env)


def test_normalize_reference():
    assert normalize_reference("docker.io/referee/base-python:bookworm") == BASE
    assert normalize_reference("python") == "python:latest" == normalize_reference("docker.io/library/python")


# -- the policy ------------------------------------------------------------------------------------
def test_honest_dockerfiles_pass():
    plan = check(f"FROM {BASE}\nCOPY predict.py /app/predict.py\nCMD [\"python3\", \"/app/predict.py\"]\n")
    assert plan.bases == [BASE] and [s.base for s in plan.stages] == [BASE]
    plan = check(f"ARG BASE={BASE}\nFROM ${{BASE}} AS build\nRUN echo hi > /x\n"
                 "FROM build AS test\nFROM docker.io/referee/base-python:bookworm\n"
                 "COPY --from=build /x /x\nCOPY --from=1 /x /y\nADD model.tar.gz /app/\nVOLUME /scratch\n"
                 'CMD ["true"]\n')
    assert [s.base for s in plan.stages] == [BASE, "stage:0", BASE] and plan.bases == [BASE]
    # shifts are not heredocs: the word after << must start right away
    check(f"FROM {BASE}\nRUN python3 -c \"print(1 << 30, 2<<3)\" && echo $((1 << 4))\n")


REFUSALS = [
    ("FROM python:3.11\n", 1, "from-allowed", "python:3.11"),
    (f"FROM {BASE}\nFROM 64ee01f0f25c\n", 2, "from-allowed", "64ee01f0f25c"),
    ("FROM sha256:64ee01f0f25c\n", 1, "from-allowed", "sha256"),
    (f"FROM {BASE}@sha256:{'b' * 64}\n", 1, "from-allowed", "digest"),
    ("ARG B=other/image:1\nFROM $B\n", 2, "from-allowed", "other/image:1"),
    ("ARG B\nFROM ${B:-${X}}\n", 2, "from-allowed", "cannot be resolved"),
    (f"FROM --platform=linux/arm64 {BASE}\n", 1, "from-flags", "--platform"),
    (f"FROM {BASE}\nCOPY --from=64ee01f0f25c /etc/passwd /x\n", 2, "copy-from", "64ee01f0f25c"),
    (f"FROM {BASE}\nCOPY --from=0 /a /b\n", 2, "copy-from", "--from=0"),  # itself, not an earlier stage
    (f"FROM {BASE} AS a\nCOPY --from=b /a /b\nFROM {BASE} AS b\n", 2, "copy-from", "--from=b"),
    (f"FROM {BASE}\nCOPY --from=$S /a /b\n", 2, "copy-from", "variable"),
    (f"FROM {BASE}\nADD http://127.0.0.1:8000/secret /s\n", 2, "add-remote", "127.0.0.1"),
    (f"FROM {BASE}\nADD [\"https://example.org/x\", \"/x\"]\n", 2, "add-remote", "example.org"),
    (f"FROM {BASE}\nADD git@github.com:a/b.git /src\n", 2, "add-remote", "git@"),
    (f"FROM {BASE}\nARG U=http://x/\nADD $U /x\n", 3, "add-variables", "$U"),
    (f"FROM {BASE}\nADD --checksum=sha256:00 x /x\n", 2, "flags", "--checksum"),
    (f"FROM {BASE}\nCOPY --link a /a\n", 2, "flags", "--link"),
    (f"FROM {BASE}\nRUN --mount=type=bind,from=64ee01f0f25c,target=/m cp /m/x /x\n", 2, "run-flags", "--mount"),
    (f"FROM {BASE}\nRUN --network=host true\n", 2, "run-flags", "--network"),
    (f"FROM {BASE}\nONBUILD ADD http://x /y\n", 2, "onbuild", "ONBUILD"),
    (f"FROM {BASE}\nRUN <<EOF\nFROM 64ee01f0f25c\nEOF\n", 2, "heredoc", "heredoc"),
    (f"FROM {BASE}\nRUN cat <<EOF\n", 2, "heredoc", "heredoc"),
    (f"FROM {BASE}\nRUN cat <<'EOF' > /x\n", 2, "heredoc", "heredoc"),
    (f"FROM {BASE}\nRUN echo 1<<3\n", 2, "heredoc", "heredoc"),
    (f"# syntax=docker/dockerfile:1\nFROM {BASE}\n", 1, "directives", "syntax"),
    (f"# check=skip=all\n# escape=`\nFROM {BASE}\n", 2, "directives", "first line"),
    (f"FROM {BASE}\nVOLUME /data/input/cache\n", 2, "volume", "/data/input"),
    (f"FROM {BASE}\nVOLUME [\"/data/output\"]\n", 2, "volume", "/data/output"),
    (f"RUN true\nFROM {BASE}\n", 1, "instructions", "before the first FROM"),
    (f"FROM {BASE}\nRUN a\rFROM evil\n", 2, "characters", "carriage return"),
    (f"FROM {BASE} AS Bad!\n", 1, "stage-name", "Bad!"),
]


@pytest.mark.parametrize("text,line,rule,words", REFUSALS, ids=[f"{r[2]}-{i}" for i, r in enumerate(REFUSALS)])
def test_refusals_name_the_line_and_the_rule(text, line, rule, words):
    err = refused(text)
    assert err.line == line and f"line {line}" in str(err), str(err)
    assert f"rule {rule}" in str(err) and words in str(err), str(err)
    assert str(err).startswith("sub/Dockerfile, line")


def test_refusal_hint_lists_the_allowed_bases():
    err = refused("FROM python:3.11\n")
    assert BASE in (err.hint or "")
