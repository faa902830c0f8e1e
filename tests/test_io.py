"""pipeline.io: round trips against pandas, clear errors, and the bad-row policies."""

from __future__ import annotations

import gzip
import re
import uuid

import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.io import BadRowsError, infer_format, quarantine_report, read, write_parquet

pytestmark = pytest.mark.timeout(60)

SYNC = {"scheduler": "sync"}  # memory:// lives in this process, and no cluster is needed here


def sample_frame(n=40, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "id": np.arange(n, dtype="int64"),
            "x": rng.normal(size=n),
            "city": rng.choice(["Lima", "Osaka", "Berlin"], n),
            "flag": rng.random(n) < 0.5,
        }
    )
    df.loc[3, "x"] = np.nan
    df.loc[5, "city"] = None
    return df


def assert_same(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal as frames; dask returns text as pyarrow strings where pandas returns ``str``."""
    result = result.reset_index(drop=True)
    expected = expected.reset_index(drop=True)
    text = {c: result.dtypes[c] for c in expected if expected.dtypes[c] == "str"}
    pd.testing.assert_frame_equal(result, expected.astype(text))


def write_csv_parts(directory, df, n_files=2, suffix=".csv"):
    directory.mkdir(exist_ok=True)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(df)), n_files)):
        p = directory / f"part-{i}{suffix}"
        if suffix.endswith(".gz"):
            with gzip.open(p, "wt") as f:
                df.iloc[part].to_csv(f, index=False)
        else:
            df.iloc[part].to_csv(p, index=False)
        paths.append(p)
    return paths


def write_parquet_parts(directory, df, n_files=2, suffix=".parquet"):
    directory.mkdir(exist_ok=True)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(df)), n_files)):
        p = directory / f"part-{i}{suffix}"
        df.iloc[part].to_parquet(p, index=False)
        paths.append(p)
    return paths


def path_forms(directory, paths, ext):
    return {
        "file": str(paths[0]),
        "glob": str(directory / f"*{ext}"),
        "directory": str(directory),
        "list": [str(p) for p in paths],
        "file_url": f"file://{directory}/*{ext}",
    }


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("form", ["file", "glob", "directory", "list", "file_url"])
def test_csv_round_trip_matches_pandas(tmp_path, form):
    df = sample_frame()
    paths = write_csv_parts(tmp_path / "data", df)
    target = path_forms(tmp_path / "data", paths, ".csv")[form]
    expected = pd.read_csv(paths[0]) if form == "file" else pd.concat(map(pd.read_csv, paths))
    assert_same(read(target).compute(**SYNC), expected)


@pytest.mark.parametrize("form", ["file", "glob", "directory", "list", "file_url"])
def test_parquet_round_trip_matches_pandas(tmp_path, form):
    df = sample_frame()
    paths = write_parquet_parts(
        tmp_path / "data", df, suffix=".pq" if form == "glob" else ".parquet"
    )
    ext = paths[0].suffix
    target = path_forms(tmp_path / "data", paths, ext)[form]
    expected = pd.read_parquet(paths[0]) if form == "file" else pd.read_parquet(paths)
    assert_same(read(target).compute(**SYNC), expected)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_memory_url_round_trip(fmt):
    df = sample_frame()
    fs = fsspec.filesystem("memory")
    root = f"/pipeline-test-{uuid.uuid4().hex}"
    try:
        with fs.open(f"{root}/a.{fmt}", "wb") as f:
            if fmt == "csv":
                f.write(df.to_csv(index=False).encode())
            else:
                df.to_parquet(f, index=False)
        result = read(f"memory://{root}").compute(**SYNC)
    finally:
        fs.rm(root, recursive=True)
    assert_same(result, df)


def test_csv_blocks_and_gzip_match_pandas(tmp_path):
    df = sample_frame(n=500)
    plain = write_csv_parts(tmp_path / "plain", df, n_files=2)
    write_csv_parts(tmp_path / "zipped", df, n_files=2, suffix=".csv.gz")
    expected = pd.concat(map(pd.read_csv, plain))

    blocks = read(tmp_path / "plain", blocksize=1000)
    assert blocks.npartitions > 4  # each file cut into several blocks
    assert_same(blocks.compute(**SYNC), expected)

    gz = read(tmp_path / "zipped", blocksize=1000)
    assert gz.npartitions == 2  # compressed files are not split
    assert_same(gz.compute(**SYNC), expected)


def test_columns_and_dtype(tmp_path):
    df = sample_frame()
    (p,) = write_csv_parts(tmp_path / "d", df, n_files=1)
    out = read(p, columns=["x", "id"], dtype={"id": "float32"}).compute(**SYNC)
    assert list(out.columns) == ["x", "id"]
    assert out["id"].dtype == np.float32
    np.testing.assert_allclose(out["x"], df["x"])


def test_missing_values_are_not_bad_rows(tmp_path):
    p = tmp_path / "gaps.csv"
    p.write_text("a,b,c\n1.5,,x\n,NA,\nnan,2,y\n")
    out = read(p).compute(**SYNC)
    assert len(out) == 3
    assert out["a"].isna().sum() == 2 and out["b"].isna().sum() == 2


def test_read_and_bad_rows_on_cluster(client, tmp_path):
    df = sample_frame(n=200)
    write_csv_parts(tmp_path / "ok", df, n_files=3)
    assert_same(client.compute(read(tmp_path / "ok")).result(), df)

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,abc\n5,6\n")
    with pytest.raises(BadRowsError) as info:
        client.compute(read(bad)).result()
    # the attributes survive the trip from the worker
    assert (info.value.file, info.value.row, info.value.column) == (str(bad), 3, "b")

    q = tmp_path / "q"
    kept = client.compute(read(bad, on_bad_rows="quarantine", quarantine_path=q)).result()
    assert kept["a"].tolist() == [1, 5]
    assert quarantine_report(q)["rows_quarantined"] == 1


# ---------------------------------------------------------------------------------------------
# Errors at read() time


def test_missing_path_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        read(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match=r"nothing\*\.parquet"):
        read(str(tmp_path / "nothing*.parquet"))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(FileNotFoundError, match="emptydir"):
        read(tmp_path / "emptydir")


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


@pytest.mark.parametrize("name", ["image.csv", "image.parquet", "image.png", "notes.txt"])
def test_non_data_file_is_a_value_error(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(PNG if name.startswith("image") else b"a,b\n1,2\n")
    with pytest.raises(ValueError, match=re.escape(name)) as info:
        read(p)
    assert "CSV" in str(info.value) and "Parquet" in str(info.value)


def test_empty_data_names_the_path(tmp_path):
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b\n")
    with pytest.raises(ValueError, match=r"header\.csv"):
        read(header_only)
    (tmp_path / "zero.csv").write_bytes(b"")
    with pytest.raises(ValueError, match="no data rows"):
        read([header_only, tmp_path / "zero.csv"])
    pd.DataFrame({"a": pd.Series([], dtype="float64")}).to_parquet(tmp_path / "none.parquet")
    with pytest.raises(ValueError, match=r"none\.parquet"):
        read(tmp_path / "none.parquet")


def test_duplicate_header_names_columns_and_file(tmp_path):
    p = tmp_path / "dup.csv"
    p.write_text("a,b,a,c,c\n1,2,3,4,5\n")
    with pytest.raises(ValueError, match=r"dup\.csv") as info:
        read(p)
    assert "['a', 'c']" in str(info.value)


def test_files_that_disagree_on_columns(tmp_path):
    (tmp_path / "one.csv").write_text("a,b\n1,2\n")
    (tmp_path / "two.csv").write_text("a,c\n1,2\n")
    with pytest.raises(ValueError, match=r"two\.csv.*one\.csv"):
        read(tmp_path)


def test_invalid_arguments(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("a\n1\n")
    with pytest.raises(ValueError, match="quarantine_path"):
        read(p, on_bad_rows="quarantine")
    with pytest.raises(ValueError, match="on_bad_rows"):
        read(p, on_bad_rows="skip")
    with pytest.raises(ValueError, match=r"\['zz'\]"):
        read(p, columns=["zz"])


def test_infer_format(tmp_path):
    assert infer_format("s3://bucket/x.csv.gz") == "csv"
    assert infer_format("memory://a/b.pq") == "parquet"
    write_parquet_parts(tmp_path / "d", sample_frame())
    assert infer_format(tmp_path / "d") == "parquet"
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match=r"x\.json"):
        infer_format([tmp_path / "x.json"])


def test_write_parquet_round_trip(tmp_path):
    df = sample_frame()
    files = write_parquet(df, tmp_path / "out")
    assert [f.rsplit("/", 1)[-1] for f in files] == ["part-00000.parquet"]
    assert_same(read(tmp_path / "out").compute(**SYNC), df)


# ---------------------------------------------------------------------------------------------
# Bad rows


BAD_CSV = "a,b,c\n1,2.0,x\n2,abc,y\n3,inf,z\n4,5\n5,6,7,8\n\n6,1.5,w\n"
# line numbers in the file (the header is line 1), column, reason; line 7 is blank
BAD_LINES = {
    3: ("b", "type"),
    4: ("b", "non_finite"),
    5: ("c", "malformed"),
    6: (None, "malformed"),
}


@pytest.mark.parametrize(
    "body, line, column",
    [
        ("1,2.0,x\n2,abc,y\n3,4.0,z\n", 3, "b"),  # does not parse as float
        ("1,2.0,x\n2,3.0,y\n3,-inf,z\n", 4, "b"),  # non-finite
        ("1,2.0,x\n2,3.0\n", 3, "c"),  # a field short: column c is missing
        ("1,2.0,x\n2,3.0,y\n3,4.0,z,extra\n", 4, None),  # a field too many
    ],
)
def test_raise_names_file_partition_line_and_column(tmp_path, body, line, column):
    p = tmp_path / "bad.csv"
    p.write_text("a,b,c\n" + body)
    df = read(p)  # lazy: nothing raised yet
    with pytest.raises(BadRowsError) as info:
        df.compute(**SYNC)
    message = str(info.value)
    assert "bad.csv" in message and "partition 0" in message and f"line {line}" in message
    if column is not None:
        assert f"column {column!r}" in message
    assert (info.value.row, info.value.column) == (line, column)


def test_line_numbers_count_from_the_file_start_in_later_blocks(tmp_path):
    p = tmp_path / "long.csv"
    lines = [f"{i},{i * 0.5}" for i in range(2000)]
    lines[1500] = "1500,oops"
    p.write_text("a,b\n" + "\n".join(lines) + "\n")
    df = read(p, blocksize=4096)
    with pytest.raises(BadRowsError) as info:
        df.compute(**SYNC)
    assert info.value.row == 1502  # header + 1500 rows before it
    assert info.value.partition > 0
    assert f"partition {info.value.partition}, line 1502, column 'b'" in str(info.value)


def test_parquet_inf_is_bad_nan_is_not(tmp_path):
    df = pd.DataFrame({"a": [1.0, np.nan, np.inf, 4.0, -np.inf], "s": list("vwxyz")})
    p = tmp_path / "v.parquet"
    df.to_parquet(p, index=False)
    with pytest.raises(BadRowsError) as info:
        read(p).compute(**SYNC)
    assert "v.parquet" in str(info.value) and "row 2, column 'a'" in str(info.value)

    q = tmp_path / "q"
    kept = read(p, on_bad_rows="quarantine", quarantine_path=q).compute(**SYNC)
    assert kept["s"].tolist() == ["v", "w", "y"]
    bad = pd.read_parquet(q)
    assert bad["row"].tolist() == [2, 4] and set(bad["reason"]) == {"non_finite"}


def test_quarantine_ledger(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text(BAD_CSV)
    q = tmp_path / "q"
    df = read(p, on_bad_rows="quarantine", quarantine_path=q, blocksize=20)
    kept = df.compute(**SYNC)

    rows_in_source = sum(1 for ln in BAD_CSV.splitlines()[1:] if ln)
    report = quarantine_report(q)
    assert report["complete"] and report["partitions"] == df.npartitions
    assert rows_in_source == len(kept) + report["rows_quarantined"] == report["rows_in_source"]
    assert report["by_reason"] == {"type": 1, "non_finite": 1, "malformed": 2}
    assert report["files"] == [str(p)]
    assert kept["a"].tolist() == [1, 6]

    bad = pd.read_parquet(q).sort_values("row")
    assert list(bad.columns) == ["source_file", "partition", "row", "column", "reason", "raw"]
    assert bad["row"].tolist() == sorted(BAD_LINES)
    for row, column, reason in zip(bad["row"], bad["column"], bad["reason"], strict=True):
        assert (None if pd.isna(column) else column, reason) == BAD_LINES[row]
    assert bad["raw"].tolist() == ["2,abc,y", "3,inf,z", "4,5", "5,6,7,8"]


def test_quarantine_path_is_reset_by_each_read(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text(BAD_CSV)
    q = tmp_path / "q"
    read(p, on_bad_rows="quarantine", quarantine_path=q, blocksize=20).compute(**SYNC)
    clean = tmp_path / "clean.csv"
    clean.write_text("a,b,c\n1,2,x\n")
    read(clean, on_bad_rows="quarantine", quarantine_path=q).compute(**SYNC)
    report = quarantine_report(q)
    assert report["rows_quarantined"] == 0 and report["rows_kept"] == 1 and report["complete"]


GOOD_ROW = st.tuples(
    st.integers(-1000, 1000),
    st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)),
    st.sampled_from(["u", "v", "w"]),
)
BAD_LINE = st.sampled_from(["1,abc,u", "2,inf,v", "3,-inf,w", "4,5", "5,6,u,7", "x,1.0,u"])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    good=st.lists(GOOD_ROW, min_size=1, max_size=60),
    bad=st.lists(st.tuples(st.integers(0, 60), BAD_LINE), max_size=8),
    blocksize=st.sampled_from([16, 64, 256, None]),
)
def test_quarantine_invariant_holds_for_any_mix(tmp_path_factory, good, bad, blocksize):
    """rows in source == rows returned + rows quarantined, the kept rows are the good rows in
    order, and the quarantined line numbers are where the bad lines were put."""
    tmp = tmp_path_factory.mktemp("mix")
    lines = [f"{a},{'' if b is None else repr(b)},{c}" for a, b, c in good]
    bad_texts = []
    for position, text in sorted(bad, key=lambda t: t[0], reverse=True):
        lines.insert(min(position, len(lines)), text)
        bad_texts.append(text)
    (tmp / "mix.csv").write_text("a,b,c\n" + "\n".join(lines) + "\n")
    clean = pd.DataFrame(good, columns=["a", "b", "c"]).astype({"b": "float64"})

    q = tmp / "q"
    df = read(tmp / "mix.csv", on_bad_rows="quarantine", quarantine_path=q, blocksize=blocksize,
              dtype={"a": "int64", "b": "float64", "c": "str"})  # fmt: skip
    kept = df.compute(**SYNC)
    report = quarantine_report(q)
    assert report["complete"]
    assert len(lines) == len(kept) + report["rows_quarantined"]
    assert_same(kept, clean)
    records = pq.read_table(q).to_pandas()
    expected_lines = sorted(i + 2 for i, ln in enumerate(lines) if ln in set(bad_texts))
    assert sorted(records["row"]) == expected_lines
