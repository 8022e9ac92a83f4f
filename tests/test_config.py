"""The typed config: paths relative to the file, and errors that name the key and the file."""

import os
from pathlib import Path

import pytest

from pipeline.config import ConfigError, GenericDataset, MovieLensDataset, load_config

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
    with pytest.raises(ConfigError, match=rf"{path}: dataset: "):
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
