"""Generic adapter and image downloads: CSV/Parquet catalogs, local and URL images (a 127.0.0.1 server)."""

import hashlib
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import Config
from pipeline.datasets import DatasetError
from pipeline.datasets.generic import load_generic
from pipeline.images import cache_path, download_images

PICTURE = b"\x89PNG fake image bytes" * 10


class _Handler(BaseHTTPRequestHandler):
    """/ok/<name>: an image; /big: over the limit (declared); /stream-big: over it, undeclared;
    /flaky: 503 twice, then the image; /missing: 404; /slow-fail: always 500."""

    hits: Counter = Counter()
    lock = threading.Lock()

    def do_GET(self):  # noqa: N802 (the http.server API)
        with self.lock:
            self.hits[self.path] += 1
            hits = self.hits[self.path]
        if self.path.startswith("/ok/"):
            self._send(200, PICTURE + self.path.encode())
        elif self.path == "/big":
            self._send(200, b"x" * 5000)
        elif self.path == "/stream-big":
            self.send_response(200)
            self.end_headers()  # no Content-Length: the body runs until the connection closes
            self.wfile.write(b"y" * 5000)
            self.close_connection = True
        elif self.path == "/flaky":
            self._send(503, b"busy") if hits <= 2 else self._send(200, PICTURE)
        elif self.path == "/always-500":
            self._send(500, b"broken")
        else:
            self._send(404, b"not here")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture()
def server():
    _Handler.hits = Counter()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.hits
    httpd.shutdown()
    httpd.server_close()


def fetch(urls, cache, **kwargs):
    options = {
        "concurrency": 4,
        "retries": 2,
        "timeout_s": 5.0,
        "max_bytes": 1000,
        "backoff_s": 0.01,
    }
    return download_images(urls, cache, **(options | kwargs))


def test_download_once_retries_and_limits(server, tmp_path):
    base, hits = server
    urls = [
        f"{base}/ok/a",
        f"{base}/ok/a",
        f"{base}/flaky",
        f"{base}/big",
        f"{base}/stream-big",
        f"{base}/missing",
        f"{base}/always-500",
    ]
    results = fetch(urls, tmp_path / "cache")
    ok = results[f"{base}/ok/a"]
    assert (
        ok.path == cache_path(tmp_path / "cache", f"{base}/ok/a")
        and ok.path.read_bytes() == PICTURE + b"/ok/a"
    )
    assert ok.sha256 == hashlib.sha256(PICTURE + b"/ok/a").hexdigest()
    assert hits["/ok/a"] == 1  # the repeated URL is fetched once
    assert (
        results[f"{base}/flaky"].sha256 == hashlib.sha256(PICTURE).hexdigest()
        and hits["/flaky"] == 3
    )
    assert results[f"{base}/big"].error == "larger than max_bytes 1000"
    assert results[f"{base}/stream-big"].error == "larger than max_bytes 1000"
    assert (
        results[f"{base}/missing"].error == "HTTP 404" and hits["/missing"] == 1
    )  # 404 is not retried
    assert (
        results[f"{base}/always-500"].error == "HTTP 500 after 3 tries" and hits["/always-500"] == 3
    )
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        cache_path(tmp_path / "cache", u).name for u in (f"{base}/ok/a", f"{base}/flaky")
    )  # failed downloads leave no file, not even a temp one
    again = fetch([f"{base}/ok/a"], tmp_path / "cache")
    assert again[f"{base}/ok/a"].from_cache and hits["/ok/a"] == 1


def test_unreachable_host_is_a_failure_not_an_exception(tmp_path):
    results = fetch(["http://127.0.0.1:9/nothing"], tmp_path / "cache", retries=1)
    assert results["http://127.0.0.1:9/nothing"].error == "ConnectError after 2 tries"


def dataset(tmp_path: Path, **fields):
    raw = {"name": "mine", "store": "store", "dataset": {"kind": "generic", **fields}}
    return Config.model_validate(raw, context={"base_dir": tmp_path}).dataset


def test_csv_catalog_with_own_column_names_local_and_url_images(server, tmp_path):
    base, hits = server
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.jpg").write_bytes(b"local image")
    (tmp_path / "secret.jpg").write_bytes(b"outside")
    (tmp_path / "items.csv").write_text(
        "sku,name,blurb,notes,picture\n"
        "A,Alpha,first item,,a.jpg\n"
        f"B,Beta,,,{base}/ok/b\n"
        f"C,Gamma,third,more words,{base}/big\n"
        "D,Delta,fourth,,none.jpg\n"
        "E,Epsilon,fifth,,../secret.jpg\n"
        "F,Phi,sixth,,\n",
        encoding="utf-8",
    )
    (tmp_path / "events.csv").write_text(
        "who,what,when,stars\nu1,A,10,5\nu1,B,20,1\nu2,C,30,4\nu2,Z,40,4\n", encoding="utf-8"
    )
    config = dataset(
        tmp_path,
        items="items.csv",
        interactions="events.csv",
        item_id_column="sku",
        title_column="name",
        text_columns=["blurb", "notes"],
        image_column="picture",
        image_root="pics",
        user_column="who",
        interaction_item_column="what",
        timestamp_column="when",
        rating_column="stars",
        download={"retries": 0, "max_bytes": 1000},
    )
    source = load_generic(config, tmp_path / "store" / "images")
    items = source.items
    assert items.column("text").to_pylist() == [
        "first item",
        None,
        "third more words",
        "fourth",
        "fifth",
        "sixth",
    ]
    assert items.column("title").to_pylist()[:2] == ["Alpha", "Beta"]
    paths = items.column("image_path").to_pylist()
    assert paths[0] == str((tmp_path / "pics" / "a.jpg").resolve())
    assert Path(paths[1]).read_bytes() == PICTURE + b"/ok/b" and hits["/ok/b"] == 1
    assert paths[2:] == [None, None, None, None]
    assert items.column("image_sha256")[0].as_py() == hashlib.sha256(b"local image").hexdigest()
    drops = {
        (d.kind, d.reason.split(" (item kept")[0]): (d.count, d.examples) for d in source.drops
    }
    assert drops[("images", "image URL not fetched: larger than max_bytes 1000")] == (1, ("C",))
    assert drops[("images", "image file not found")] == (1, ("D",))
    assert drops[("images", f"image path outside image_root {(tmp_path / 'pics').resolve()}")] == (
        1,
        ("E",),
    )
    assert drops[("images", "no image in column 'picture'")] == (1, ("F",))
    assert drops[("text", "no text in columns ['blurb', 'notes']")] == (1, ("B",))
    assert "Z" in source.interactions.column("item_id").to_pylist()  # ingest drops unknown items
    assert source.interactions.column("timestamp").to_pylist() == [10, 20, 30, 40]
    assert source.interactions.column("rating").to_pylist() == [5.0, 1.0, 4.0, 4.0]
    load_generic(config, tmp_path / "store" / "images")
    assert hits["/ok/b"] == 1  # a second ingest finds the image in the cache


def test_parquet_catalog_with_defaults_and_iso_times(tmp_path):
    pq.write_table(
        pa.table(
            {"item_id": [1, 2], "title": ["x", "y"], "text": ["t1", "t2"], "image": [None, None]}
        ),
        tmp_path / "items.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "user_id": ["u", "u"],
                "item_id": ["1", "2"],
                "ts": ["2020-01-01T00:00:00", "2020-01-01T00:00:10"],
            }
        ),
        tmp_path / "inter.parquet",
    )
    config = dataset(
        tmp_path, items="items.parquet", interactions="inter.parquet", timestamp_column="ts"
    )
    source = load_generic(config, tmp_path / "cache")
    assert source.items.column("item_id").to_pylist() == ["1", "2"]
    assert source.interactions.column("timestamp").to_pylist() == [1577836800, 1577836810]


def test_bad_generic_inputs_are_errors_naming_file_and_key(tmp_path):
    (tmp_path / "items.csv").write_text(
        "item_id,title,text,image\nA,x,t,\nA,y,u,\n", encoding="utf-8"
    )
    (tmp_path / "inter.csv").write_text("user_id,item_id\nu,A\n", encoding="utf-8")
    with pytest.raises(
        DatasetError, match=r"items\.csv: 1 duplicate item id\(s\) in column 'item_id': A"
    ):
        load_generic(
            dataset(tmp_path, items="items.csv", interactions="inter.csv"), tmp_path / "cache"
        )
    (tmp_path / "items.csv").write_text("id,title,text,image\nA,x,t,\n", encoding="utf-8")
    with pytest.raises(
        DatasetError,
        match=r"items\.csv: column 'item_id' \(config key dataset\.item_id_column\) not found; columns are \['id', 'title'",
    ):
        load_generic(
            dataset(tmp_path, items="items.csv", interactions="inter.csv"), tmp_path / "cache"
        )
    (tmp_path / "items.csv").write_bytes(b"item_id,title,text,image\nA,x,caf\xe9,\n")
    with pytest.raises(DatasetError, match=r"items\.csv: text is not valid UTF-8 \(line 2"):
        load_generic(
            dataset(tmp_path, items="items.csv", interactions="inter.csv"), tmp_path / "cache"
        )
    (tmp_path / "items.csv").write_text("item_id,title,text,image\nA,x,t,\n", encoding="utf-8")
    (tmp_path / "inter.csv").write_text("user_id,item_id,when\nu,A,yesterday\n", encoding="utf-8")
    with pytest.raises(
        DatasetError, match=r"inter\.csv: column 'when' \(dataset\.timestamp_column\) is not a time"
    ):
        load_generic(
            dataset(tmp_path, items="items.csv", interactions="inter.csv", timestamp_column="when"),
            tmp_path / "cache",
        )
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DatasetError, match=r"broken\.parquet: unreadable"):
        load_generic(
            dataset(tmp_path, items="broken.parquet", interactions="inter.csv"), tmp_path / "cache"
        )
