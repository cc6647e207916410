"""Intake validation: every malformed prediction file is rejected with its line and a hint; nothing stored."""

from __future__ import annotations

import pytest
import yaml

from referee.platform.controller.competitions import load_into_store
from referee.platform.core.errors import SubmissionRejected
from referee.submissions.submit import submit

REF = "id,label,split\n" + "\n".join(f"x{i},{i % 2},{'public' if i < 4 else 'private'}" for i in range(8)) + "\n"


@pytest.fixture
def comp(tmp_path, store):
    (tmp_path / "ref.csv").write_text(REF)
    spec = {"id": "c", "title": "C", "data": {"reference": "ref.csv"}, "split": {"column": "split"},
            "prediction": {"format": "csv", "type": "probability", "columns": ["label"], "max_bytes": 4096},
            "metrics": [{"scorer": "log_loss"}, {"scorer": "accuracy"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec))
    return load_into_store(store, tmp_path / "c.yaml")


def good_rows(n: int = 8) -> list[str]:
    return [f"x{i},{0.25 + 0.5 * (i % 2):.2f}" for i in range(n)]


def write(tmp_path, name: str, text: str | bytes):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


CASES = [
    ("missing_id", "id,label\n" + "\n".join(good_rows(7)) + "\n", None, "missing: 'x7'"),
    ("duplicate_id", "id,label\n" + "\n".join(good_rows() + ["x3,0.5"]) + "\n", 10, "duplicate id 'x3'"),
    ("unknown_id", "id,label\n" + "\n".join(good_rows() + ["zz,0.5"]) + "\n", 10, "unknown id 'zz'"),
    ("wrong_columns", "id,prob\n" + "\n".join(good_rows()) + "\n", 1, "missing column(s) ['label']"),
    ("non_numeric", "id,label\n" + "\n".join(good_rows()[:3] + ["x3,high"] + good_rows()[4:]) + "\n", 5,
     "'high' is not a number"),
    ("nan", "id,label\n" + "\n".join(good_rows()[:5] + ["x5,NaN"] + good_rows()[6:]) + "\n", 7,
     "not a finite number"),
    ("inf", "id,label\n" + "\n".join(good_rows()[:5] + ["x5,inf"] + good_rows()[6:]) + "\n", 7,
     "not a finite number"),
    ("outside", "id,label\n" + "\n".join(good_rows()[:1] + ["x1,1.5"] + good_rows()[2:]) + "\n", 3,
     "outside [0, 1]"),
    ("encoding", b"id,label\nx0,0.5\nx1,\xff0.5\n", 3, "not valid utf-8"),
    ("binary", b"id,label\n\x00\x01\x02", 2, "binary data"),
    ("empty", b"", None, "file is empty"),
    ("header_only", "id,label\n", None, "no rows"),
    ("ragged", "id,label\nx0,0.5,extra\n", 2, "expected 2 comma-separated fields"),
    ("oversize", "id,label\n" + "\n".join(good_rows()) + "\n" + "#" * 5000, None, "over the limit"),
]


@pytest.mark.parametrize("name,text,line,message", CASES, ids=[c[0] for c in CASES])
def test_rejections_name_line_and_store_nothing(tmp_path, store, comp, name, text, line, message):
    p = write(tmp_path, f"{name}.csv", text)
    blobs_before = sorted(store.root.joinpath("blobs").rglob("*"))
    with pytest.raises(SubmissionRejected) as e:
        submit(store, comp, "team", p)
    assert message in str(e.value)
    assert f"{name}.csv" in str(e.value)
    assert e.value.line == line  # None: a problem of the whole file, not of one line
    if line is not None:
        assert f"line {line}" in str(e.value)
    assert store.submissions("c") == []
    assert sorted(store.root.joinpath("blobs").rglob("*")) == blobs_before
    events = store._query("SELECT kind, message FROM events WHERE kind='rejected'")
    assert len(events) == 1 and message in events[0]["message"]


def test_rows_must_sum_to_one(tmp_path, store):
    (tmp_path / "ref.csv").write_text("id,label\na,cat\nb,dog\n")
    spec = {"id": "m", "title": "M", "data": {"reference": "ref.csv"},
            "prediction": {"type": "probability", "columns": ["cat", "dog"], "sum_to_one": True},
            "metrics": [{"scorer": "log_loss"}]}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    comp = load_into_store(store, tmp_path / "m.yaml")
    p = write(tmp_path, "p.csv", "id,cat,dog\na,0.9,0.1\nb,0.5,0.6\n")
    with pytest.raises(SubmissionRejected, match=r"line 3: probabilities sum to 1\.1"):
        submit(store, comp, "t", p)
    p = write(tmp_path, "ok.csv", "id,dog,cat\nb,0.4,0.6\na,0.1,0.9\n")  # any column and row order
    sid = submit(store, comp, "t", p)
    assert store.get_submission(sid).status == "pending"


def test_content_addressed_storage(tmp_path, store, comp):
    p = write(tmp_path, "ok.csv", "id,label\n" + "\n".join(good_rows()) + "\n")
    a = submit(store, comp, "t1", p)
    b = submit(store, comp, "t2", p)
    sa, sb = store.get_submission(a), store.get_submission(b)
    import hashlib
    assert sa.sha256 == sb.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert store.blob_path(sa.sha256).read_bytes() == p.read_bytes()
    assert sa.team == "t1" and sa.kind == "predictions" and sa.status == "pending" and sa.size == p.stat().st_size


def test_txt_and_jsonl_formats(example, store):
    for name in ("asr", "translation"):
        d = example(name)
        comp = load_into_store(store, d / "competition.yaml")
        files = sorted((d / "submissions").iterdir())
        ok = [f for f in files if "wrong" not in f.name and "bad" not in f.name and "duplicate" not in f.name
              and "not_json" not in f.name]
        for f in ok:
            submit(store, comp, f.name.split("__")[0], f)
        assert len(store.submissions(comp.id)) == len(ok) >= 4


def test_jsonl_line_separator_inside_strings_and_multi_reference_lists(tmp_path, store):
    import json

    from referee.platform.controller.reconcile import Controller
    refs = [{"id": "s1", "text": ["the cat sat", "a cat sat"]}, {"id": "s2", "text": ["hello world"]}]
    (tmp_path / "ref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    spec = {"id": "mt", "title": "MT", "data": {"reference": "ref.jsonl", "reference_columns": ["text"]},
            "prediction": {"format": "jsonl", "type": "text", "columns": ["text"]},
            "metrics": [{"scorer": "bleu"}, {"scorer": "ter"}]}
    (tmp_path / "mt.yaml").write_text(yaml.safe_dump(spec))
    comp = load_into_store(store, tmp_path / "mt.yaml")
    hyp = [{"id": "s1", "text": "a cat sat"}, {"id": "s2", "text": "hello\u2028world"}]
    p = tmp_path / "h.jsonl"
    p.write_text("".join(json.dumps(h, ensure_ascii=False) + "\n" for h in hyp), encoding="utf-8")
    sid = submit(store, comp, "t", p)  # U+2028 inside a JSON string is not a line break
    Controller(store, comp).run()
    import sacrebleu
    got = {r.metric: r.value for r in store.scores(sid)}
    streams = [["the cat sat", "hello world"], ["a cat sat", None]]
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(["a cat sat", "hello\u2028world"], streams).score)
    assert got["ter"] == pytest.approx(sacrebleu.corpus_ter(["a cat sat", "hello\u2028world"], streams).score)


@pytest.mark.parametrize("value", ["０.５", "٠.٥", "0.0_9", "0.5\u00a0", "1e1_0"])
def test_numbers_must_be_plain_ascii_decimals(tmp_path, store, comp, value):
    """Python's float() (and numpy) read '０.５', '٠.٥' and '0.0_9'; a prediction file must not."""
    rows = good_rows()
    rows[2] = f"x2,{value}"
    p = write(tmp_path, "odd.csv", "id,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(SubmissionRejected) as e:
        submit(store, comp, "team", p)
    assert e.value.line == 4 and "is not a number" in str(e.value) and e.value.code == "bad_value"


def test_lookalike_ids_name_the_code_points(tmp_path, store, comp):
    rows = good_rows()
    rows[3] = "\u0445\u200b3,0.5"  # Cyrillic ha and a zero-width space: looks like x3
    p = write(tmp_path, "lookalike.csv", "id,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(SubmissionRejected) as e:
        submit(store, comp, "team", p)
    text = str(e.value)
    assert e.value.code == "unknown_id" and e.value.line == 5
    assert "known id 'x3'" in text and "U+0445 CYRILLIC SMALL LETTER HA" in text and "U+200B ZERO WIDTH SPACE" in text
    assert "\u200b" not in text and "\u0445" not in text.split("known id")[0].replace("'\\u0445", "")


def test_errors_listing_thousands_of_columns_are_short(tmp_path, store, comp):
    header = ["id", "label", *(f"extra_{i}" for i in range(5000))]
    p = write(tmp_path, "wide.csv", ",".join(header) + "\n" + "x0,0.5" + ",0" * 5000 + "\n")
    comp.prediction.max_bytes = 10**6
    with pytest.raises(SubmissionRejected) as e:
        submit(store, comp, "team", p)
    assert len(str(e.value)) < 600 and "and 4,995 more" in str(e.value)
    from referee.platform.core.tables import read_table
    ragged = write(tmp_path, "ragged.csv", ",".join(header) + "\nx0,0.5\n")
    with pytest.raises(SubmissionRejected) as e:
        read_table(ragged, "csv")
    assert len(str(e.value)) < 600 and "expected 5002" in str(e.value) and e.value.line == 2


def test_an_all_empty_text_submission_is_scored(tmp_path, store):
    from referee.platform.controller.reconcile import Controller
    (tmp_path / "ref.txt").write_text("the cat sat\nhello world\n")
    spec = {"id": "asr", "title": "ASR", "data": {"reference": "ref.txt", "reference_format": "txt",
                                                   "reference_columns": ["text"]},
            "prediction": {"format": "txt", "type": "text", "columns": ["text"]},
            "metrics": [{"scorer": "wer"}]}
    (tmp_path / "asr.yaml").write_text(yaml.safe_dump(spec))
    comp = load_into_store(store, tmp_path / "asr.yaml")
    sid = submit(store, comp, "t", write(tmp_path, "empty.txt", "\n\n"))  # two empty hypotheses
    Controller(store, comp).run()
    sub = store.get_submission(sid)
    assert sub.status == "scored", (sub.failure_reason, sub.failure_message)
    assert {r.metric: r.value for r in store.scores(sid)}["wer"] == pytest.approx(1.0)
