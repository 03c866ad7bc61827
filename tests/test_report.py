"""Tests for the run reports: summary fields (present-only, ddof, bootstrap, chance), provenance, runs over seeds."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as sk

from experiments import cli, provenance, report, seeds
from experiments.configs import smic_bilstm
from merjax.errors import UserError
from merjax.train import metrics
from tests.conftest import make_clip_set

CLASSES = [0, 1, 2]


def smoke_config(seed: int = 0):
    config = smic_bilstm.get_config("smoke")
    config.experiment = "fake_experiment"
    config.seed = seed
    return config


@pytest.fixture
def clip_set():
    """Subjects s1, s2 mostly class 1; s3, s4 mostly class 2 (4 subjects x 6 clips)."""
    clips = make_clip_set(num_subjects=4, clips_per_class=2, num_classes=3, size=8, min_length=2, max_length=3)
    labels = np.array([[0, 1, 1, 1, 1, 2], [0, 1, 1, 1, 1, 2], [0, 1, 2, 2, 2, 2], [0, 1, 2, 2, 2, 2]]).ravel()
    return dataclasses.replace(clips, labels=labels.astype(np.int32))


def fold_result(clip_set, name, test_subjects, train_subjects, predictions):
    on_test_side = np.isin(clip_set.subjects, test_subjects)
    return {
        "name": name, "train_subjects": train_subjects, "val_subjects": [], "test_subjects": test_subjects,
        "training_samples": {"clips": int(np.isin(clip_set.subjects, train_subjects).sum()),
                             "samples_per_class": {}},
        "selected_epoch": 1,
        "test": {"labels": clip_set.labels[on_test_side].tolist(), "predictions": list(predictions)},
    }


def two_fold_results(clip_set, seed: int = 0):
    """Fold A tests s1, s2 and trains on s3; fold B tests s3, s4 and trains on s1; random predictions."""
    rng = np.random.default_rng(seed)
    first = fold_result(clip_set, "fold_a", ["s1", "s2"], ["s3"], rng.integers(0, 3, 12))
    second = fold_result(clip_set, "fold_b", ["s3", "s4"], ["s1"], rng.integers(0, 3, 12))
    return [first, second]


def test_summarize_pools_folds_and_reports_present_only_metrics_ddof_bootstrap_and_chance(clip_set):
    results = two_fold_results(clip_set)
    # leave class 0 out of fold A's test side
    keep = [i for i, label in enumerate(results[0]["test"]["labels"]) if label != 0]
    results[0]["test"] = {key: [values[i] for i in keep] for key, values in results[0]["test"].items()}
    record = {"experiment": "fake_experiment"}
    summary = report.summarize(smoke_config(), clip_set, results, provenance=record)
    labels = np.concatenate([r["test"]["labels"] for r in results])
    predictions = np.concatenate([r["test"]["predictions"] for r in results])
    assert summary["uf1"] == pytest.approx(sk.f1_score(labels, predictions, average="macro", labels=CLASSES,
                                                       zero_division=0), abs=1e-12)
    assert summary["provenance"] is record
    fold_a = summary["folds"][0]
    assert fold_a["absent_classes"] == ["c0"] and summary["folds"][1]["absent_classes"] == []
    present = sorted(set(results[0]["test"]["labels"]))
    assert fold_a["uar_present"] == pytest.approx(sk.recall_score(
        results[0]["test"]["labels"], results[0]["test"]["predictions"], average="macro", labels=present,
        zero_division=0), abs=1e-12)
    assert summary["fold_std_ddof"] == 1
    fold_uf1 = [fold["uf1"] for fold in summary["folds"]]
    assert summary["fold_std"]["uf1"] == pytest.approx(np.std(fold_uf1, ddof=1), abs=1e-12)
    assert summary["bootstrap"] == {**summary["bootstrap"], **metrics.bootstrap_interval(
        labels, predictions, 3, resamples=report.BOOTSTRAP_RESAMPLES, seed=report.BOOTSTRAP_SEED)}
    assert summary["bootstrap"]["confidence"] == 0.95 and "1000 resamples" in summary["bootstrap"]["method"]
    uniform = metrics.expected_uniform_metrics(labels, 3)
    assert {key: summary["chance"]["uniform"][key] for key in uniform} == uniform
    json.dumps(summary, allow_nan=False)


def test_majority_chance_predicts_each_folds_training_majority_never_the_test_sides(clip_set):
    results = two_fold_results(clip_set)
    majority = report.summarize(smoke_config(), clip_set, results)["chance"]["majority"]
    # fold A trains on s3 (mostly class 2) and tests s1, s2 (mostly class 1): it must predict 2, not 1
    assert majority["classes"] == {"fold_a": "c2", "fold_b": "c1"}
    labels = np.concatenate([r["test"]["labels"] for r in results])
    predictions = np.concatenate([np.full(12, 2), np.full(12, 1)])
    assert majority["accuracy"] == pytest.approx(sk.accuracy_score(labels, predictions), abs=1e-12)
    assert majority["uf1"] == pytest.approx(sk.f1_score(labels, predictions, average="macro", labels=CLASSES,
                                                        zero_division=0), abs=1e-12)
    assert majority["uar"] == pytest.approx(sk.recall_score(labels, predictions, average="macro", labels=CLASSES,
                                                            zero_division=0), abs=1e-12)


def test_majority_chance_is_not_given_when_a_subject_name_is_in_two_databases(clip_set):
    datasets = np.where(np.arange(len(clip_set.labels)) % 2 == 0, "smic", "casme2")
    mixed = dataclasses.replace(clip_set, datasets=datasets)
    majority = report.summarize(smoke_config(), mixed, two_fold_results(clip_set))["chance"]["majority"]
    assert majority["uf1"] is None and "'s1' occurs in several databases" in majority["reason"]
    assert "majority: not given" in report.markdown(report.summarize(smoke_config(), mixed,
                                                                     two_fold_results(clip_set)))


def test_markdown_shows_interval_chance_ddof_present_only_and_provenance(clip_set, tmp_path):
    record = provenance.collect(smoke_config(), [write_fake_dataset(tmp_path)])
    summary = report.summarize(smoke_config(), clip_set, two_fold_results(clip_set), provenance=record)
    text = report.markdown(summary)
    low, high = summary["bootstrap"]["uf1"]
    for expected in ("| pooled over folds |", f"[{low:.4f}, {high:.4f}]", "| chance: training-side majority |",
                     "| chance: uniform guess (expected) |", "mean ± std of folds (ddof=1)",
                     "| fold | accuracy | UF1 | UAR | UF1 (present) | UAR (present) | absent from test | clips |",
                     "## Provenance", "weights: trained from scratch", "preset `smoke`",
                     "dataset synthetic_me/tiny 1.0.0"):
        assert expected in text, expected


def test_write_writes_the_summary_markdown_and_figures_atomically(clip_set, tmp_path):
    results = two_fold_results(clip_set)
    for result in results:
        result["history"] = [{"epoch": 0, "train_loss": 1.0, "train_accuracy": 0.3}]
    summary = report.summarize(smoke_config(), clip_set, results)
    report.write(str(tmp_path), summary, results, clip_set.class_names)
    assert sorted(os.listdir(tmp_path)) == ["confusion.png", "learning_curve_accuracy.png",
                                            "learning_curve_loss.png", "summary.json", "summary.md"]
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert (tmp_path / "summary.md").read_text() == report.markdown(summary)


def write_fake_dataset(tmp_path, build_report: dict | None = None) -> str:
    directory = tmp_path / "synthetic_me" / "tiny" / "1.0.0"
    directory.mkdir(parents=True)
    (directory / "dataset_info.json").write_text(json.dumps({"name": "synthetic_me", "configName": "tiny",
                                                             "version": "1.0.0"}))
    if build_report is not None:
        (directory / "metadata.json").write_text(json.dumps(build_report))
    return str(directory)


def test_provenance_records_code_packages_devices_data_weights_and_seeds(tmp_path):
    dataset = write_fake_dataset(tmp_path, build_report={"clips_found": 3})
    weights = tmp_path / "resnet50_ft_weight.pkl"
    weights.write_bytes(b"not really weights")
    config = smoke_config(seed=3)
    config.model.weights = str(weights)
    record = provenance.collect(config, [dataset])
    assert record["experiment"] == "fake_experiment" and record["preset"] == "smoke"
    assert record["seed"] == 3 and record["seeds"] == []
    assert record["weights"] == {"from_scratch": False, "file": "resnet50_ft_weight.pkl", "path": str(weights),
                                 "sha256": hashlib.sha256(b"not really weights").hexdigest()}
    (data,) = record["datasets"]
    assert (data["name"], data["config"], data["version"]) == ("synthetic_me", "tiny", "1.0.0")
    assert data["build_report_sha256"] == hashlib.sha256(
        open(os.path.join(dataset, "metadata.json"), "rb").read()).hexdigest()
    assert record["packages"]["jax"] and record["packages"]["flax"] and record["packages"]["numpy"]
    assert record["devices"]["count"] >= 1 and record["devices"]["process_count"] == 1
    code = record["merjax"]
    assert code["version"]
    if code["commit"] is not None:   # the tests run from the git checkout the experiments live in
        assert len(code["commit"]) == 40 and isinstance(code["dirty"], bool)
    json.dumps(record, allow_nan=False)


def test_provenance_of_a_run_from_scratch_and_of_a_missing_weights_file(tmp_path):
    config = smoke_config()
    assert provenance.collect(config, [])["weights"]["from_scratch"] is True
    config.model.weights = str(tmp_path / "absent.pkl")
    with pytest.raises(UserError, match=r"config.model.weights: .*absent.pkl does not exist"):
        provenance.collect(config, [])


def test_git_state_is_unknown_outside_a_git_checkout_of_the_package(tmp_path):
    (tmp_path / "experiments").mkdir()
    assert provenance.git_state(str(tmp_path / "experiments"))["commit"] is None


def seed_summary(clip_set, seed: int, record: dict | None = None) -> dict:
    return report.summarize(smoke_config(seed), clip_set, two_fold_results(clip_set, seed), provenance=record)


def test_aggregate_gives_mean_sample_std_and_t_interval_over_seeds(clip_set):
    summaries = [seed_summary(clip_set, seed) for seed in (0, 1, 2)]
    summary = seeds.aggregate(summaries)
    assert summary["seeds"] == [0, 1, 2] and summary["per_seed"] == summaries and summary["std_ddof"] == 1
    for key in ("accuracy", "uf1", "uar"):
        values = [s[key] for s in summaries]
        assert summary[key] == pytest.approx(np.mean(values), abs=1e-12)
        assert summary[f"{key}_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        expected = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
        np.testing.assert_allclose(summary["interval"][key], expected, atol=1e-12)
    assert summary["chance"]["uniform"]["uf1"] == pytest.approx(
        np.mean([s["chance"]["uniform"]["uf1"] for s in summaries]))
    text = seeds.markdown(summary)
    assert "| mean ± std (ddof=1) |" in text and "| 95 % t-interval of the mean |" in text
    assert text.count("\n| 0 |") + text.count("\n| 1 |") + text.count("\n| 2 |") == 3


def test_aggregate_of_one_seed_has_no_std_or_interval(clip_set):
    summary = seeds.aggregate([seed_summary(clip_set, 4)])
    assert summary["uf1_std"] is None and summary["interval"]["uf1"] is None
    assert "n/a (one seed)" in seeds.markdown(summary)


def test_stages_and_sample_dependence_are_reported_per_seed_and_over_seeds(clip_set):
    summaries = []
    for seed in (0, 1):
        config = smoke_config(seed)
        config.protocol.kind = "kfold_by_sample"
        results = {"exp1": two_fold_results(clip_set, seed + 10), "clips": two_fold_results(clip_set, seed)}
        summary = report.summarize(config, clip_set, results["clips"])
        summary["stages"] = report.stage_summaries(clip_set, results, "clips")
        assert summary["subject_independent"] is False
        assert "**Not subject-independent**" in report.markdown(summary)
        assert summary["stages"]["clips"]["uf1"] == pytest.approx(summary["uf1"])
        summaries.append(summary)
    over = seeds.aggregate(summaries)
    assert over["subject_independent"] is False and list(over["stages"]) == ["exp1", "clips"]
    values = [s["stages"]["exp1"]["uf1"] for s in summaries]
    assert over["stages"]["exp1"]["uf1"] == pytest.approx(np.mean(values))
    assert over["stages"]["exp1"]["uf1_std"] == pytest.approx(np.std(values, ddof=1))
    text = seeds.markdown(over)
    assert "**Not subject-independent**" in text and "| clips (final) |" in text


def test_checked_seeds_names_the_bad_value():
    assert seeds.checked_seeds((0, 5, 2)) == [0, 5, 2]
    with pytest.raises(UserError, match="config.seeds: seed 1 is given more than once"):
        seeds.checked_seeds((1, 0, 1))
    with pytest.raises(UserError, match=r"config.seeds: -1 is not a non-negative integer"):
        seeds.checked_seeds((0, -1))
    with pytest.raises(UserError, match=r"config.seeds: '2' is not a non-negative integer"):
        seeds.checked_seeds((0, "2"))


def test_run_seeds_runs_each_seed_in_its_claimed_folder_and_summarises_them(clip_set, tmp_path):
    dataset = write_fake_dataset(tmp_path / "data")
    calls = []

    def run_one(config, workdir):
        assert os.path.exists(os.path.join(workdir, ".lock"))   # inside the seed folder's claim
        calls.append((config.seed, tuple(config.seeds), workdir))
        return seed_summary(clip_set, config.seed, provenance.collect(config, [dataset]))

    config = smoke_config()
    config.seeds = (2, 0)
    config.lock()   # as the command line gives it
    workdir = tmp_path / "run"
    summary = seeds.run_seeds(config, str(workdir), run_one)
    assert calls == [(2, (), str(workdir / "seed_2")), (0, (), str(workdir / "seed_0"))]
    assert tuple(config.seeds) == (2, 0) and config.seed == 0   # the caller's config is untouched
    for seed in (2, 0):
        recorded = json.loads((workdir / f"seed_{seed}" / "config.json").read_text())
        assert recorded["seed"] == seed and recorded["seeds"] == []
    assert {"summary.json", "summary.md", "seeds.png"} <= set(os.listdir(workdir))
    written = json.loads((workdir / "summary.json").read_text())
    assert written["seeds"] == [2, 0] and [s["seed"] for s in written["per_seed"]] == [2, 0]
    assert written["uf1"] == pytest.approx(np.mean([s["uf1"] for s in written["per_seed"]]))
    record = written["provenance"]
    assert record["seeds"] == [2, 0] and record["wall_seconds"] >= 0
    assert record["datasets"][0]["directory"] == dataset and record["differs_between_seeds"] == []
    assert (workdir / "summary.md").read_text() == seeds.markdown(summary)


def test_run_seeds_refuses_a_seed_folder_holding_another_configuration(clip_set, tmp_path):
    config = smoke_config()
    config.seeds = (0, 1)
    other = seeds.seed_config(config, 1)
    other.train.epochs = 7
    (tmp_path / "seed_1").mkdir()
    (tmp_path / "seed_1" / "config.json").write_text(other.to_json_best_effort())
    ran = []

    def run_one(config, workdir):
        ran.append(config.seed)
        return seed_summary(clip_set, config.seed)

    with pytest.raises(UserError, match=r"seed_1 holds a run of another configuration \(train.epochs: 7 -> 2\)"):
        seeds.run_seeds(config, str(tmp_path), run_one)
    assert ran == [0]


def test_provenance_over_seeds_names_what_differs_between_the_seeds_runs(clip_set, tmp_path):
    dataset = write_fake_dataset(tmp_path)
    records = [provenance.collect(smoke_config(seed), [dataset]) for seed in (0, 1)]
    records[1]["merjax"]["commit"] = "0" * 40
    # Seed 0 was finished by an earlier invocation (both folds reused), seed 1 ran in this one.
    records[0]["stage_folds"], records[1]["stage_folds"] = {"total": 2, "reused": 2}, {"total": 2, "reused": 0}
    summaries = [seed_summary(clip_set, seed, record) for seed, record in zip((0, 1), records)]
    config = smoke_config()
    config.seeds = (0, 1)
    record = seeds.seeds_provenance(config, summaries, wall_seconds=1.0)
    assert record["differs_between_seeds"] == ["merjax.commit"]   # not the folds reused, which are per seed
    assert record["stage_folds"] == {"total": 4, "reused": 2}
    lines = "\n".join(provenance.markdown_lines(record))
    assert "**the seeds' runs differ in**: merjax.commit" in lines
    assert "wall time: 1.0 s (this invocation; 2 of 4 stage-folds were finished by an earlier run" in lines


def test_cross_validation_runs_over_seeds_when_seeds_are_given(clip_set, tmp_path, monkeypatch):
    from experiments import cv

    monkeypatch.setattr(cv, "run", lambda config, workdir: seed_summary(clip_set, config.seed))
    config = smoke_config()
    config.seeds = (0, 1)
    text = cli.cross_validation(config, str(tmp_path))
    assert text.startswith("# fake_experiment on fake/clips (kfold_by_subject), seeds 0, 1")
    assert sorted(name for name in os.listdir(tmp_path) if name.startswith("seed_")) == ["seed_0", "seed_1"]
    config.seeds = ()
    assert "| pooled over folds |" in cli.cross_validation(config, str(tmp_path / "single"))
