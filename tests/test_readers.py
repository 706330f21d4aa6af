"""Readers: BEIR/JSONL/Parquet/Lance agree, and bad input names the record."""

from __future__ import annotations

import json
import logging

import lance
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import data_dir
from listcon.pipeline.data.readers import judged_queries, read_corpus, read_qrels, read_queries
from listcon.schemas import DataError, passage_text


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def beir(tmp_path, corpus, queries=({"_id": "q1", "text": "cell"},), qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\n"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_jsonl(tmp_path / "corpus.jsonl", corpus)
    write_jsonl(tmp_path / "queries.jsonl", queries)
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text(qrels)
    return tmp_path


DOCS = [{"_id": "d1", "title": "Cells", "text": "the cell"}, {"_id": "d2", "title": "", "text": "a gene"}, {"_id": 3, "text": "blood"}]


def test_beir_corpus_and_passage_text():
    corpus = read_corpus(data_dir("scifact"))
    assert corpus.table.num_rows == 5183 and corpus.skipped_empty == []
    first = corpus.table.slice(0, 1).to_pylist()[0]
    assert first["id"] == "4983"
    assert corpus.texts()[0] == first["title"] + " " + first["text"]
    assert passage_text("", "body") == "body"


def test_jsonl_parquet_and_lance_read_the_same(tmp_path):
    expected = read_corpus(write_jsonl(tmp_path / "c.jsonl", DOCS)).table
    assert expected["id"].to_pylist() == ["d1", "d2", "3"]
    table = pa.table({"_id": ["d1", "d2", "3"], "title": ["Cells", "", None], "text": ["the cell", "a gene", "blood"]})
    pq.write_table(table, tmp_path / "c.parquet")
    lance.write_dataset(table.rename_columns(["id", "title", "text"]), str(tmp_path / "c.lance"))
    assert read_corpus(tmp_path / "c.parquet").table.equals(expected)
    assert read_corpus(tmp_path / "c.lance").table.equals(expected)
    assert read_corpus(tmp_path / "c.jsonl", limit=2).table.num_rows == 2


def test_duplicate_ids_name_both_lines(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [*DOCS, {"_id": "d2", "text": "again"}])
    with pytest.raises(DataError, match=r"line 4, column 'id': duplicate id 'd2' \(first at line 2\)"):
        read_corpus(path)


def test_empty_text_is_an_error_or_skipped_with_a_count(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [*DOCS, {"_id": "d9", "title": " ", "text": "\t"}])
    with pytest.raises(DataError, match=r"line 4, column 'text': passage 'd9' has empty text \(use --skip-empty"):
        read_corpus(path)
    corpus = read_corpus(path, empty="skip")
    assert corpus.skipped_empty == ["d9"] and corpus.table.num_rows == 3
    assert corpus.ids() == {"d1", "d2", "3", "d9"}  # qrels may judge a skipped passage


def test_invalid_utf8_and_malformed_json_give_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match="line 2: invalid UTF-8"):
        read_corpus(path)
    path.write_text('{"_id": "a", "text": "ok"}\n\n{"_id": "b", "text": }\n')
    with pytest.raises(DataError, match="line 3: malformed JSON"):
        read_corpus(path)


def test_missing_columns_are_named(tmp_path):
    with pytest.raises(DataError, match=r"line 1, column 'text': record 'x' has no 'text'"):
        read_corpus(write_jsonl(tmp_path / "c.jsonl", [{"_id": "x", "body": "no text"}]))
    with pytest.raises(DataError, match=r"line 1, column '_id': record has no id"):
        read_corpus(write_jsonl(tmp_path / "d.jsonl", [{"text": "no id"}]))
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), tmp_path / "c.parquet")
    with pytest.raises(DataError, match=r"column 'text': required column is missing; found columns \['id', 'body'\]"):
        read_corpus(tmp_path / "c.parquet")
    pq.write_table(pa.table({"doc": ["a"], "text": ["x"]}), tmp_path / "e.parquet")
    with pytest.raises(DataError, match="no id column"):
        read_corpus(tmp_path / "e.parquet")


def test_qrels_and_queries_must_reference_known_ids(tmp_path):
    data = beir(tmp_path, DOCS, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq7\td1\t1\nq1\tzz\t1\n")
    corpus_ids = set(read_corpus(data).table["id"].to_pylist())
    with pytest.raises(DataError, match=r"qrels/test.tsv, column 'query-id': 1 query id\(s\) are not in the query collection, e.g. \['q7'\]"):
        judged_queries(data, "test", corpus_ids)


def test_qrels_with_unknown_passages_and_bad_lines(tmp_path):
    data = beir(tmp_path, DOCS, qrels="query-id\tcorpus-id\tscore\nq1\tzz\t1\n")
    with pytest.raises(DataError, match=r"column 'corpus-id': 1 corpus id\(s\) .* \['zz'\]"):
        judged_queries(data, "test", {"d1", "d2", "3"})
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tyes\n")
    with pytest.raises(DataError, match=r"line 2, column 'score': score 'yes' is not a number"):
        read_qrels(data, "test")
    with pytest.raises(DataError, match=r"no qrels for split 'dev'; available splits: \['test'\]"):
        read_qrels(data, "dev")


def test_only_judged_queries_are_kept():
    queries, qrels = judged_queries(data_dir("cisi"), "test")
    assert queries.num_rows == 76 < read_queries(data_dir("cisi")).num_rows
    assert set(queries["id"].to_pylist()) == set(qrels["query_id"].to_pylist())


@pytest.mark.parametrize("line,message", [
    ("q1\td1\t0.9", r"line 2, column 'score': score '0.9' is not an integer relevance grade"),  # was truncated to 0
    ("q1\td1\tinf", r"line 2, column 'score': score 'inf' is not an integer relevance grade"),  # was an OverflowError
    ("q1\td1\tnan", r"score 'nan' is not an integer relevance grade"),
    ("q1\td1\t1\nq1\td1\t2", r"line 3.*\(q1, d1\) is judged 1 on line 2 and 2 here"),  # the last value used to win
    ("q1\td 1\t1", r"line 2, column 'corpus-id': corpus-id 'd 1' is empty or contains whitespace"),
])
def test_qrels_that_would_score_silently_wrong_are_refused(tmp_path, line, message):
    data = beir(tmp_path, DOCS, qrels=f"query-id\tcorpus-id\tscore\n{line}\n")
    with pytest.raises(DataError, match=message):
        read_qrels(data, "test")


def test_integral_grades_and_repeated_identical_judgments_are_read_once(tmp_path):
    data = beir(tmp_path, DOCS, qrels="query-id\tcorpus-id\tscore\nq1\td1\t2.0\nq1\td1\t2\nq1\td2\t0\n")
    assert read_qrels(data, "test").to_pylist() == [{"query_id": "q1", "passage_id": "d1", "relevance": 2},
                                                    {"query_id": "q1", "passage_id": "d2", "relevance": 0}]


def test_an_id_with_whitespace_is_refused_where_it_is_read(tmp_path):
    data = beir(tmp_path, [{"_id": "d 1", "text": "a cell"}, {"_id": "d2", "text": "a gene"}])
    with pytest.raises(DataError, match=r"corpus.jsonl, line 1, column '_id': id 'd 1' contains whitespace"):
        read_corpus(data)


def test_trec_qrels_read_as_the_beir_layout_would(tmp_path):
    """TREC's 'qid iteration docid relevance' used to be misread as (qid, '0', grade=docid)."""
    beir_layout = read_qrels(beir(tmp_path / "b", DOCS, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n"), "test")
    trec = read_qrels(beir(tmp_path / "t", DOCS, qrels="q1 0 d1 1\nq1 0 d2 0\n"), "test")
    tabs = read_qrels(beir(tmp_path / "tab", DOCS, qrels="q1\t0\td1\t1\nq1\t0\td2\t0\n"), "test")
    assert trec.to_pylist() == tabs.to_pylist() == beir_layout.to_pylist()
    with pytest.raises(DataError, match=r"line 2: expected TREC qrels 'qid iteration docid relevance' \(4 fields"):
        read_qrels(beir(tmp_path / "mixed", DOCS, qrels="q1 0 d1 1\nq1 d2 0\n"), "test")


def test_qrels_without_a_judgment_are_refused(tmp_path):
    data = beir(tmp_path, DOCS, qrels="query-id\tcorpus-id\tscore\n\n")
    with pytest.raises(DataError, match=r"qrels/test.tsv: no judgments \(only a header or blank lines\)"):
        read_qrels(data, "test")


def test_unknown_judged_passages_can_be_counted_instead(tmp_path, caplog):
    data = beir(tmp_path, DOCS, qrels="query-id\tcorpus-id\tscore\nq1\tzz\t1\nq1\td1\t1\n")
    with caplog.at_level(logging.WARNING):
        _, qrels = judged_queries(data, "test", {"d1", "d2", "3"}, unknown_passages="count")
    assert qrels.num_rows == 2 and "1 judged passage(s) are not in the corpus (e.g. ['zz']); counted" in caplog.text


def test_a_byte_order_mark_opening_a_file_is_read_as_nothing(tmp_path):
    data = beir(tmp_path, DOCS, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        path = data / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_corpus(data).table["id"].to_pylist()[0] == "d1"
    assert read_queries(data)["id"].to_pylist()[0] == "q1"
    assert read_qrels(data, "test")["query_id"].to_pylist() == ["q1"]
