"""Studies: the regimes' subsamples, the arms, the config's bad inputs, and a tiny study end to end."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.study import plan_arms, subsample_train
from tests.support.catalog import make_catalog, write_config


def _pairs(counts: list[int]) -> np.ndarray:
    rows = [(user, item) for user, n in enumerate(counts) for item in range(n)]
    return np.array(rows, dtype=np.int64)


def test_each_user_keeps_max_1_round_f_n_of_its_pairs():
    train = _pairs([10, 3, 1, 7])
    kept = subsample_train(train, 0.2, seed=5)
    counts = np.bincount(kept[:, 0], minlength=4)
    assert counts.tolist() == [2, 1, 1, 1]  # round(2.0), max(1, round(0.6)), max(1, .2), round(1.4)
    keys = set(map(tuple, train.tolist()))
    assert set(map(tuple, kept.tolist())) <= keys  # a subset, in the original order
    assert (np.diff(kept[:, 0] * 100 + kept[:, 1]) > 0).all()


def test_the_subsample_is_one_per_regime_and_seed():
    train = _pairs([40] * 30)
    first = subsample_train(train, 0.5, seed=1)
    assert np.array_equal(first, subsample_train(train, 0.5, seed=1))  # shared by every arm
    assert not np.array_equal(first, subsample_train(train, 0.5, seed=2))
    assert np.array_equal(subsample_train(train, 1.0, seed=3), train)
    assert len(subsample_train(train, 0.1, seed=1)) == 30 * 4


def _config(tmp_path, study: str):
    catalog = make_catalog(tmp_path / "catalog", n_items=12, n_users=8)
    path = write_config(tmp_path, catalog, name="study", extra=study)
    return load_config(path)


def test_default_arms_are_the_models_and_each_modality_alone(tmp_path):
    config = _config(tmp_path, "[study]\nmodels = ['lirdrec', 'bpr', 'pop']\n")
    arms = plan_arms(config)
    assert [arm.name for arm in arms] == ["lirdrec", "bpr", "pop", "lirdrec[caption]",
                                          "lirdrec[text]"]
    assert [arm.id_only for arm in arms] == [False, True, True, False, False]
    assert arms[3].modalities == ("caption",)


@pytest.mark.parametrize(("study", "message"), [
    ("models = ['lirdrec', 'nope']", "study.models: unknown model(s) ['nope']"),
    ("models = []\nmodality_subsets = []", "study: no arm"),
    ("modality_subsets = [['text', 'sound']]", "unknown modality ['sound']"),
    ("modality_subsets = [[]]", "study.modality_subsets[0] = []: empty"),
    ("train_fractions = [1.0, 0.0]", "train fractions must lie in (0, 1], got [0.0]"),
    ("train_fractions = [1.5]", "train fractions must lie in (0, 1], got [1.5]"),
    ("seeds = []", "study.seeds: expected one or more distinct seeds"),
    ("overrides.bpr = { learning_rate = -1.0 }", "study.overrides.bpr: train.learning_rate"),
    ("tune.bpr = { n_trials = 2, space.learning_rate = { kind = 'float', low = 0.1, high = 0.01 } }",
     "study.tune.bpr: search.space.learning_rate: low = 0.1 > high = 0.01"),
    ("tune.bpr = { n_trials = 2, space.reg_weight = { kind = 'float', low = 0.0, high = 1.0, log = true } }",
     "study.tune.bpr: search.space.reg_weight: a log range needs low > 0, got low = 0.0"),
    ("tune.bpr = { n_trials = 2, space.learning_rate = { kind = 'float', low = 1e-3, high = 1e-2 } }\n"
     "tune.lightgcn = { n_trials = 3, space.learning_rate = { kind = 'float', low = 1e-3, high = 1e-2 } }",
     "study.tune: the arms compared get equal budgets"),
    ("tune.nope = { space.learning_rate = { kind = 'float', low = 1e-3, high = 1e-2 } }",
     "unknown model(s) ['nope']"),
])
def test_a_bad_study_names_its_key_before_anything_runs(tmp_path, study, message):
    with pytest.raises(ConfigError) as error:
        _config(tmp_path, f"[study]\n{study}\n")
    assert message in str(error.value)


STUDY = """
[study]
models = ["lirdrec", "pop"]
modality_subsets = [["text"]]
train_fractions = [1.0, 0.5]
seeds = [1, 2]
max_epochs = 2

[study.tune.bpr]
n_trials = 2
max_epochs = 1
space.learning_rate = { kind = "float", low = 1e-3, high = 1e-1, log = true }
"""


@pytest.mark.slow
def test_a_tiny_study_end_to_end_then_reused_then_resumed(tmp_path, capsys):
    """CLI `study`: 4 arms (one tuned) x 2 regimes x 2 seeds; the table, parquet, plots, the tuned
    arm's selected point at every seed, and a paired test that
    can be recomputed from the runs' per-user files; a rerun trains nothing; a run whose
    metrics.json is gone (a kill) is the only one trained again."""
    import json

    import pyarrow.parquet as pq
    from scipy.stats import wilcoxon

    from pipeline.__main__ import main
    from pipeline.per_user import read_per_user
    from pipeline.study import study_layout

    config = _config(tmp_path, STUDY)
    assert main(["study", "--config", str(config.source)]) == 0
    first = capsys.readouterr().out
    layout = study_layout(config)
    table = pq.read_table(layout.table).to_pylist()
    arms = ("lirdrec", "pop", "bpr-tuned", "lirdrec[text]")
    assert {(r["arm"], r["regime"], r["seed"]) for r in table} == {
        (arm, regime, seed) for arm in arms for regime in (1.0, 0.5) for seed in (1, 2)}
    for regime in (1.0, 0.5):  # tuned once per regime; every seed runs the selected point
        folder, = (layout.root / "search").glob(f"bpr-tuned@f{regime:g}-*")
        search = json.loads((folder / "search.json").read_text())
        chosen = {json.loads(r["settings"])["learning_rate"] for r in table
                  if r["arm"] == "bpr-tuned" and r["regime"] == regime}
        assert chosen == {search["best_params"]["learning_rate"]}
    assert "tuned on valid: 2 trials, <= 1 epochs" in first
    assert {r["split"] for r in table} >= {"valid", "test", "test_warm"}
    summary = json.loads(layout.summary.read_text())
    body = summary["regimes"]["0.5"]
    assert body["best_id_only"] == "pop"  # the only ID-only arm
    assert "### train fraction 0.5 (best ID-only arm on valid: pop; " in first
    assert "cold-start item(s), ranked among themselves)" in first
    for name in ("regimes", "ablation"):
        assert layout.plot(name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the p-value is the Wilcoxon test of the seed-mean per-user test NDCG@20, recomputed here
    runs = {(r["arm"], r["seed"]): r["run_dir"] for r in table if r["regime"] == 0.5}
    def seed_mean(arm):
        tables = [read_per_user(runs[(arm, seed)])["test"] for seed in (1, 2)]
        assert np.array_equal(tables[0][0], tables[1][0])  # same users every seed
        return np.mean([values["ndcg@20"] for _, values in tables], axis=0)
    difference = seed_mean("lirdrec") - seed_mean("pop")
    expected = 1.0 if not difference.any() else wilcoxon(difference).pvalue
    assert body["arms"]["lirdrec"]["p_value"] == pytest.approx(expected)

    metrics = sorted(layout.runs.glob("*/metrics.json"))
    assert len(metrics) == 16
    stamps = {path: path.stat().st_mtime_ns for path in metrics}
    assert main(["study", "--config", str(config.source)]) == 0
    rerun = capsys.readouterr().out
    assert rerun.count("finished earlier") == 16
    assert rerun.count("2 of 2 trials finished, running 0") == 2
    from pipeline.stages import study_stage

    assert not study_stage(config, log=lambda _: None).ran  # every run reused: "Skipped"
    assert {path: path.stat().st_mtime_ns for path in metrics} == stamps

    killed = metrics[3]
    killed.unlink()
    assert main(["study", "--config", str(config.source)]) == 0
    again = capsys.readouterr().out
    assert again.count("finished earlier") == 15 and killed.exists()
    assert {p: p.stat().st_mtime_ns for p in metrics if p != killed} == \
        {p: s for p, s in stamps.items() if p != killed}

    # another budget in the same store (a quick preset's, say) is another search, beside the first
    other = config.source.with_name("other.toml")
    other.write_text(config.source.read_text().replace("n_trials = 2\nmax_epochs = 1",
                                                       "n_trials = 2\nmax_epochs = 2"))
    assert main(["study", "--config", str(other)]) == 0
    assert len(list((layout.root / "search").glob("bpr-tuned@f1-*"))) == 2


@pytest.mark.slow
def test_caption_and_embedder_variants_coexist_and_leave_the_main_features_alone(tmp_path):
    """A tiny random-weight VLM as a caption variant and MiniLM cut at 16 tokens as an embedder
    variant: each gets its own store under studies/variants/, the main pipeline's CURRENT keys
    and vectors are what they were, and each variant arm trains on its own features. (Plumbing
    only: a random-weight VLM's captions claim nothing.)"""
    import json

    from pipeline.__main__ import main
    from pipeline.store import StoreLayout, current_key
    from pipeline.study import study_layout, variant_store
    from pipeline.training import load_inputs
    from tests.support.tiny_vlm import build_tiny_vlm

    vlm = build_tiny_vlm("qwen2_vl", tmp_path / "tiny-vlm")
    study = f"""
[study]
models = ["pop"]
modality_subsets = []
train_fractions = [1.0]
seeds = [1]
max_epochs = 1

[study.caption_variants.tiny-vlm]
backend = "transformers"
model = "{vlm}"
max_new_tokens = 8

[study.embedder_variants.minilm-16]
max_seq_length = 16
"""
    config = _config(tmp_path, study)
    assert main(["all", "--config", str(config.source)]) == 0
    layout = StoreLayout(config.store)
    keys = {"captions": current_key(layout.captions_root),
            **{m: current_key(layout.modality_embeddings(m)) for m in config.modalities}}
    before = load_inputs(config).data.features

    assert main(["study", "--config", str(config.source)]) == 0
    assert {"captions": current_key(layout.captions_root),
            **{m: current_key(layout.modality_embeddings(m)) for m in config.modalities}} == keys
    after = load_inputs(config).data.features
    assert all(np.array_equal(before[m], after[m]) for m in before)
    for variant in ("tiny-vlm", "minilm-16"):
        assert (variant_store(config, variant) / "features" / "embeddings").is_dir()
    vlm_captions = StoreLayout(variant_store(config, "tiny-vlm")).captions_root
    assert current_key(vlm_captions) != keys["captions"]  # the VLM's captions, not the descriptor's

    inputs = {json.loads(p.read_text())["arm"]: json.loads(p.read_text())["fingerprint"]
              for p in study_layout(config).runs.glob("*/inputs.json")}
    assert set(inputs) == {"pop", "lirdrec@caption:tiny-vlm", "lirdrec@embedder:minilm-16"}
    assert inputs["lirdrec@caption:tiny-vlm"] != inputs["lirdrec@embedder:minilm-16"]


def test_the_quick_preset_cuts_any_study_to_a_first_look(tmp_path):
    config = _config(tmp_path, "[study]\npreset = 'quick'\nseeds = [1, 2]\n"
                     "train_fractions = [1.0, 0.5, 0.1]\nmax_epochs = 200\n"
                     "tune.bpr = { n_trials = 10, space.learning_rate = "
                     "{ kind = 'float', low = 1e-3, high = 1e-2 } }\n")
    study = config.study
    assert (study.seeds, study.train_fractions, study.max_epochs) == ([1], [1.0, 0.2], 30)
    assert (study.tune["bpr"].n_trials, study.tune["bpr"].max_epochs) == (4, 30)


def test_ease_past_its_item_limit_stops_the_study_before_any_run(tmp_path, capsys):
    from pipeline.__main__ import main
    from pipeline.study import study_layout

    config = _config(tmp_path, "[study]\nmodels = ['pop', 'ease']\nmodality_subsets = []\n"
                     "seeds = [1]\ntrain_fractions = [1.0]\noverrides.ease = { ease_max_items = 5 }\n")
    assert main(["study", "--config", str(config.source)]) == 2
    assert "train.ease_max_items" in capsys.readouterr().err
    assert not study_layout(config).runs.exists()
