"""The typed config: paths relative to the file, and errors that name the key and the file."""

import json
import os
from pathlib import Path

import pytest

from extractors.config import (
    DescriptorCaptionConfig,
    OpenAICaptionConfig,
    OpenAIEmbedConfig,
    SentenceTransformersEmbedConfig,
    TransformersCaptionConfig,
)
from pipeline.config import (
    Config,
    ConfigError,
    GenericDataset,
    MovieLensDataset,
    config_from_snapshot,
    load_config,
)

CONFIGS = Path(__file__).parents[1] / "configs"

GOOD = """
name = "toy"
store = "out/store"

[dataset]
kind = "generic"
items = "data/items.csv"
interactions = "data/inter.csv"

[split]
method = "temporal"
cold_item_share = 0.1
"""


@pytest.fixture()
def config_dir(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "items.csv").write_text("item_id\n1\n")
    (tmp_path / "data" / "inter.csv").write_text("user_id,item_id\nu,1\n")
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_write_under_artifacts(path):
    config = load_config(path, check_paths=False)
    assert config.store.is_relative_to(CONFIGS.parent.resolve() / "artifacts")
    assert config.source == path.resolve()


def test_relative_paths_resolve_against_the_config_folder_not_the_cwd(
    config_dir, tmp_path_factory, monkeypatch
):
    path = write(config_dir, GOOD)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    config = load_config(path)
    assert isinstance(config.dataset, GenericDataset)
    assert config.store == (config_dir / "out" / "store").resolve()
    assert config.dataset.items == (config_dir / "data" / "items.csv").resolve()
    assert config.split.method == "temporal" and config.split.cold_item_share == 0.1
    assert config.split.seed == 2024 and config.dataset.download.concurrency >= 1
    assert os.getcwd() != str(config_dir)


def test_unknown_key_is_named_with_the_file(config_dir):
    path = write(config_dir, GOOD.replace('method = "temporal"', 'method = "temporal"\nseeed = 3'))
    with pytest.raises(ConfigError, match=rf"{path}: split\.seeed: Extra inputs are not permitted"):
        load_config(path)


def test_missing_key_is_named_with_the_file(config_dir):
    path = write(config_dir, GOOD.replace('interactions = "data/inter.csv"\n', ""))
    with pytest.raises(ConfigError, match=rf"{path}: dataset\.interactions: Field required"):
        load_config(path)
    path = write(config_dir, GOOD.replace('name = "toy"\n', ""))
    with pytest.raises(ConfigError, match=rf"{path}: name: Field required"):
        load_config(path)


def test_wrong_type_and_bad_values_are_named(config_dir):
    path = write(config_dir, GOOD.replace("cold_item_share = 0.1", 'cold_item_share = "some"'))
    with pytest.raises(ConfigError, match=rf"{path}: split\.cold_item_share: "):
        load_config(path)
    path = write(config_dir, GOOD.replace('method = "temporal"', 'method = "shuffled"'))
    with pytest.raises(ConfigError, match=rf"{path}: split\.method: "):
        load_config(path)
    path = write(config_dir, GOOD.replace('kind = "generic"', 'kind = "csv"'))
    with pytest.raises(ConfigError, match=rf"{path}: dataset\.kind: 'csv': expected one of 'movielens'"):
        load_config(path)
    path = write(config_dir, GOOD.replace('kind = "generic"\n', ""))
    with pytest.raises(ConfigError, match=rf"{path}: dataset\.kind: Field required"):
        load_config(path)
    path = write(config_dir, GOOD.replace('kind = "generic"', 'kind = "generic"\nmin_ratin = 3'))
    with pytest.raises(ConfigError, match=rf"{path}: dataset\.min_ratin: not a key of kind 'generic'"):
        load_config(path)


def test_missing_path_is_named(config_dir):
    path = write(config_dir, GOOD.replace("data/items.csv", "data/nowhere.csv"))
    with pytest.raises(
        ConfigError, match=rf"{path}: dataset\.items: .*path does not exist: .*nowhere\.csv"
    ):
        load_config(path)
    assert load_config(path, check_paths=False).dataset.items.name == "nowhere.csv"


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match=r"absent\.toml: config file not found"):
        load_config(tmp_path / "absent.toml")
    path = write(tmp_path, "name = \n")
    with pytest.raises(ConfigError, match=rf"{path}: not valid TOML"):
        load_config(path)


def test_overrides_use_dotted_keys(config_dir):
    config = load_config(
        write(config_dir, GOOD), overrides={"split.seed": 7, "dataset.item_id_column": "sku"}
    )
    assert config.split.seed == 7 and config.dataset.item_id_column == "sku"


def test_movielens_dataset_defaults(tmp_path):
    (tmp_path / "ml").mkdir()
    path = write(tmp_path, 'name = "m"\nstore = "s"\n[dataset]\nkind = "movielens"\npath = "ml"\n')
    config = load_config(path)
    assert isinstance(config.dataset, MovieLensDataset) and config.dataset.min_rating is None
    assert config.split.method == "random" and config.split.min_user_interactions == 1


def test_caption_and_embed_tables_are_one_class_per_backend(config_dir):
    path = write(
        config_dir,
        GOOD
        + """
[caption]
backend = "openai"
base_url = "http://127.0.0.1:8000/v1"
concurrency = 8

[embed]
model = "BAAI/bge-small-en-v1.5"

[modalities.caption]
source = "caption"

[modalities.caption.embedder]
backend = "openai"
base_url = "http://127.0.0.1:8001/v1"
dimensions = 256
""",
    )
    config = load_config(path)
    assert config.caption == OpenAICaptionConfig(base_url="http://127.0.0.1:8000/v1", concurrency=8)
    assert config.embed == SentenceTransformersEmbedConfig(model="BAAI/bge-small-en-v1.5")
    assert config.modalities["caption"].embedder == OpenAIEmbedConfig(
        base_url="http://127.0.0.1:8001/v1", dimensions=256
    )
    defaults = load_config(write(config_dir, GOOD))
    assert isinstance(defaults.caption, TransformersCaptionConfig)
    assert isinstance(defaults.embed, SentenceTransformersEmbedConfig)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            '[caption]\nbackend = "descriptor"\nbase_url = "http://127.0.0.1:8000/v1"',
            r"caption\.base_url: not a key of backend 'descriptor' \(its keys: backend, batch_size",
        ),
        ('[caption]\nbase_url = "http://x/v1"', r"caption\.base_url: not a key of backend 'transformers'"),
        ('[embed]\nbackend = "openai"\nbase_url = "u"\ndevice = "cpu"', r"embed\.device: not a key of backend 'openai'"),
        (
            '[modalities.t]\nsource = "text"\n[modalities.t.embedder]\nbackend = "openai"\nbase_url = "u"\nrevision = "r"',
            r"modalities\.t\.embedder\.revision: not a key of backend 'openai'",
        ),
        ('[caption]\nbackend = "gpt4"', r"caption\.backend: 'gpt4': expected one of 'transformers', 'openai', 'descriptor'"),
        ('[embed]\nbackend = "tfidf"', r"embed\.backend: 'tfidf': expected one of 'sentence-transformers', 'openai'"),
        ('[caption]\nbackend = "openai"', r"caption\.base_url: Field required"),
        ('[train]\nepochs = "3"', r"train\.epochs: Input should be a valid integer, got '3'"),
        ('[caption]\nbatch_size = "8"', r"caption\.batch_size: Input should be a valid integer, got '8'"),
        ('[caption]\nbatch_size = 8.0', r"caption\.batch_size: Input should be a valid integer, got 8\.0"),
        ('[embed]\nnormalize = 1', r"embed\.normalize: Input should be a valid boolean, got 1"),
        ('[rank]\nk = "20"', r"rank\.k: Input should be a valid integer, got '20'"),
        ('[train]\nlearning_rate = "1e-3"', r"train\.learning_rate: Input should be a valid number, got '1e-3'"),
        ('[compare.baselines.bpr]\nepochs = "3"', r"compare\.baselines\.bpr\.epochs: Input should be a valid integer"),
        ('[compare.baselines.bpr]\nlr = 0.1', r"compare\.baselines\.bpr\.lr: Extra inputs are not permitted"),
        ('[search.space.reg_weight]\nkind = "categorical"\nchoices = ["1e-3"]', r"search: space\.reg_weight\.choices\[0\] = '1e-3': Input should be a valid number"),
        ('[search]\ngrid = { reg_weight = [1e-3] }', r"search: grid: removed with the grid search; write each field as \[search\.space\.<field>\] kind = \"categorical\""),
        ('[search]\nmax_configs = 3', r"search: max_configs: removed with the grid search; write n_trials"),
        ('[search.space.decay_weight]\nkind = "float"\nlow = 0.5\nhigh = 1.5', r"search: search\.space\.decay_weight: 1\.5 is not a valid value: train\.decay_weight"),
        ('[search.space.learning_rate]\nkind = "float"\nlow = 0\nhigh = 1e-2\nlog = true', r"search: search\.space\.learning_rate: a log range needs low > 0"),
        ("[split]\nseed = 2024-01-01", r"split\.seed: a TOML date/time is no config value"),
    ],
)
def test_bad_keys_and_types_name_the_key_and_the_file(config_dir, table, message):
    # GOOD has a [split] table already: a second one would be a TOML error
    text = GOOD.replace("[split]", table) if table.startswith("[split]") else GOOD + table + "\n"
    path = write(config_dir, text)
    with pytest.raises(ConfigError, match=rf"{path}: {message}"):
        load_config(path)


def test_strict_types_still_take_ints_for_floats_and_arrays_for_tuples(config_dir):
    path = write(
        config_dir,
        GOOD.replace("cold_item_share = 0.1", "cold_item_share = 0")
        + "\n[train]\nlearning_rate = 1\ntopk = [10, 20]\n[compare.baselines.bpr]\nlearning_rate = 1\n"
        + "[search.space.learning_rate]\nkind = \"categorical\"\nchoices = [1, 1e-3]\n",
    )
    config = load_config(path)
    assert config.split.cold_item_share == 0.0 and isinstance(config.split.cold_item_share, float)
    assert config.train.learning_rate == 1.0 and config.train.topk == (10, 20)
    assert config.compare.train_configs(config.train)[1].learning_rate == 1.0


def test_snapshots_round_trip_and_old_flat_snapshots_still_load(config_dir):
    config = load_config(write(config_dir, GOOD + '\n[caption]\nbackend = "descriptor"\n'))
    assert config_from_snapshot(config.model_dump_json()) == config
    old = json.loads(config.model_dump_json())
    # what run folders written before the per-backend tables hold: every key of every backend
    old["caption"] = {
        "backend": "descriptor", "model": "HuggingFaceTB/SmolVLM-256M-Instruct", "revision": None,
        "prompt": "p", "max_new_tokens": 64, "batch_size": 8, "device": "auto", "dtype": "auto",
        "on_load_failure": "fail", "max_image_pixels": 40000000, "base_url": None,
        "api_key_env": "OPENAI_API_KEY", "concurrency": 4, "timeout": 120.0, "max_retries": 4,
        "retry_backoff_s": 0.5, "image_detail_side": 768,
    }
    old["embed"] = {
        "backend": "sentence-transformers", "model": "sentence-transformers/all-MiniLM-L6-v2",
        "revision": None, "instruction": "", "batch_size": 16, "normalize": False,
        "max_seq_length": None, "device": "auto", "dtype": "auto", "base_url": None,
        "api_key_env": "OPENAI_API_KEY", "dimensions": None, "max_input_chars": 32000,
        "concurrency": 4, "timeout": 120.0, "max_retries": 4, "retry_backoff_s": 0.5,
    }
    loaded = config_from_snapshot(json.dumps(old))
    assert loaded.caption == DescriptorCaptionConfig()
    assert loaded.embed == SentenceTransformersEmbedConfig(batch_size=16)
    with pytest.raises(ValueError, match="base_url"):
        Config.model_validate_json(json.dumps(old))  # as a config file, such a table is an error
    from pipeline.training import run_config

    run = config_dir / "runs" / "lirdrec-old"  # a run folder of an earlier version
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(old))
    assert run_config(run).caption == DescriptorCaptionConfig()


def test_ease_is_a_compare_baseline_with_its_keys(config_dir):
    path = write(
        config_dir,
        GOOD + "\n[compare.baselines.ease]\nease_l2_grid = [10, 300.0]\nease_max_items = 5000\n",
    )
    config = load_config(path)
    _, ease = config.compare.train_configs(config.train)
    assert ease.model == "ease" and ease.ease_l2_grid == (10.0, 300.0)
    assert ease.ease_max_items == 5000


def test_content_knn_is_a_compare_baseline_with_its_weights(config_dir):
    path = write(
        config_dir,
        GOOD + "\n[compare.baselines.content_knn]\nmm_weights = { image = 0.25, text = 0.75 }\n",
    )
    config = load_config(path)
    _, content_knn = config.compare.train_configs(config.train)
    assert content_knn.model == "content_knn" and content_knn.mm_weights["text"] == 0.75


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[compare.baselines.ease]\nease_l2_grid = [100, 0]", r"train\.ease_l2_grid: expected a "
         r"non-empty list of finite numbers > 0, got \(100\.0, 0\.0\)"),
        ("[compare.baselines.ease]\nease_l2_grid = []", r"train\.ease_l2_grid: expected a non-empty"),
        ("[train]\nease_max_items = 0", r"train\.ease_max_items: expected an integer >= 1, got 0"),
    ],
)
def test_bad_ease_keys_are_named(config_dir, table, message):
    with pytest.raises(ConfigError, match=rf"{write(config_dir, GOOD + table)}: .*{message}"):
        load_config(config_dir / "run.toml")
