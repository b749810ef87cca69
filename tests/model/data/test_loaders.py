from __future__ import annotations

import csv
import gzip
import io
import json

import pytest

from model.data.loaders import DataFormatError, detect_format, load_event_log, parse_s3rec_lines, parse_taobao_rows
from tests.conftest import BEAUTY, TAOBAO_SAMPLE

DIRTY_CSV = """\
1,10,100,pv,1511544070
1,11,100,cart,1511544080
1,11,100,cart,1511544080
1,12,101,pv
1,13,101,like,1511544090
1,14,101,buy,not-a-time
1,15,102,fav,99
1,16,102,pv,1511544075
2,20,200,pv,1511544000
,21,200,pv,1511544001

2,22,201,buy,1511544002
"""


def test_dirty_rows_are_counted_not_raised() -> None:
    log = parse_taobao_rows(csv.reader(io.StringIO(DIRTY_CSV)))
    assert log.report.rows_read == 11
    assert log.report.rows_kept == 5
    assert dict(log.report.reasons) == {
        "duplicate": 1,
        "missing_field": 2,
        "unknown_behavior": 1,
        "bad_timestamp": 2,
        "out_of_order": 1,
    }
    user1 = next(u for u in log.users if u.user_id == "1")
    assert user1.timestamps == (1511544070, 1511544075, 1511544080)  # re-sorted, not dropped
    assert user1.items == ("10", "16", "11")
    assert user1.behaviors == ("view", "view", "cart")


def test_s3rec_lines_use_the_deepest_attribute_as_category() -> None:
    log = parse_s3rec_lines(["1 4 5 x", "2 5 9", "1 4"], {"4": [7, 8, 9], "5": [3]})
    assert [u.items for u in log.users] == [("4", "5"), ("5",)]
    assert [u.categories for u in log.users] == [("9", "3"), ("3",)]
    assert dict(log.report.reasons) == {"bad_id": 1, "missing_field": 1, "duplicate": 1}
    assert log.users[0].timestamps is None


def test_format_detection(tmp_path) -> None:
    assert detect_format(TAOBAO_SAMPLE) == "taobao"
    assert detect_format(BEAUTY) == "s3rec"
    junk = tmp_path / "junk.txt"
    junk.write_text("hello world\n")
    with pytest.raises(DataFormatError, match="cannot tell the format"):
        detect_format(junk)


def test_shipped_taobao_sample_loads_with_its_documented_counts() -> None:
    log = load_event_log(TAOBAO_SAMPLE)
    assert (len(log.users), log.n_events) == (815, 84_475)
    assert log.report.rows_kept == 84_475
    # The shared README says rows are time-sorted within every user.
    assert log.report.reasons["out_of_order"] == 0


def test_beauty_loads_with_its_documented_counts() -> None:
    log = load_event_log(BEAUTY)
    assert (len(log.users), log.n_events) == (22_363, 198_502)
    assert len({i for u in log.users for i in u.items}) == 12_101


def test_gzip_and_plain_read_the_same(tmp_path) -> None:
    plain = tmp_path / "events.csv"
    plain.write_text(DIRTY_CSV)
    packed = tmp_path / "events.csv.gz"
    packed.write_bytes(gzip.compress(DIRTY_CSV.encode()))
    assert load_event_log(plain, "taobao").users == load_event_log(packed).users


def test_s3rec_needs_its_attribute_file(tmp_path) -> None:
    (tmp_path / "Toy.txt").write_text("1 2 3\n")
    with pytest.raises(FileNotFoundError, match="Toy_item2attributes"):
        load_event_log(tmp_path / "Toy.txt")
    (tmp_path / "Toy_item2attributes.json").write_text(json.dumps({"2": [5], "3": [6, 7]}))
    assert load_event_log(tmp_path / "Toy.txt").users[0].categories == ("5", "7")
