"""Membership inference end to end on real run folders (in-process FedAvg runs): success, no false signal,
ground truth, seeding, and bad input refused before any work."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch

from flwr_privshare.apps import Experiment
from flwr_privshare.attacks.cli import main
from flwr_privshare.attacks.membership import candidates
from flwr_privshare.attacks.membership.candidates import membership_data, shared_rows
from flwr_privshare.attacks.membership.dpm_reference import DPMReferenceTrainer
from flwr_privshare.attacks.run_folder import load_run_folder
from flwr_privshare.config import CommonSection
from flwr_privshare.data import client_partition, client_rows, public_split
from flwr_privshare.poisoning import split_model
from flwr_privshare.poisoning.section import DPMSection
from flwr_privshare.report import write_report

from ..experiments import DP, DPM, VISUALMIXER
from ..golden import DPM_SMALL, PLAIN_LOOP
from ..inprocess import run_in_process

# Deliberately overfit: 2 clients with 100 CIFAR-10 images each, 60 epochs in small batches.
OVERFIT = {
    **PLAIN_LOOP,
    "protection": "none",
    "num-server-rounds": 20,
    "local-epochs": 3,
    "samples-per-client": 100,
    "batch-size": 8,
    "optimizer": "adam",
    "learning-rate": 0.001,
    "test-size": 500,
    "public-size": 1000,
    "oracle-epochs": 0,
}
# Barely trained, on MNIST: cheap reference models for the tests that do not need a strong attack.
CHEAP = {
    **PLAIN_LOOP,
    "protection": "none",
    "dataset": "ylecun/mnist",
    "num-server-rounds": 1,
    "samples-per-client": 100,
    "test-size": 500,
    "public-size": 1500,
    "oracle-epochs": 0,
}
LOW_FPR = "tpr_at_0.001_fpr"


def make_run(
    root: Path, data_dir: Path, overrides: dict[str, object], name: str, experiment: Experiment = VISUALMIXER
) -> Path:
    config = {**overrides, "data-dir": str(data_dir), "output-dir": str(root), "run-name": name}
    run_in_process(experiment, 2, config)
    return root / name


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    return make_run(tmp_path_factory.mktemp("overfit"), data_root / "cifar10", OVERFIT, "overfit")


@pytest.fixture(scope="module")
def cheap_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    return make_run(tmp_path_factory.mktemp("cheap"), data_root / "mnist", CHEAP, "cheap")


def membership(folder: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((folder / "attacks" / "membership.json").read_text())


def test_attacks_succeed_on_an_overfit_model(overfit_run: Path) -> None:
    # the reference models train on halves of the 200 candidates: 100 rows, as many as a client has
    main([str(overfit_run), "--reference-models", "4", "--members", "100", "--non-members", "100",
          "--population", "100", "--extra-pool", "0"])  # fmt: skip
    report = membership(overfit_run)
    plain = report["queries"]["plain"]
    assert set(plain) == {
        "loss", "shadow", "lira-online", "lira-online-fixed-variance", "lira-offline",
        "lira-offline-fixed-variance", "rmia",
    }  # fmt: skip
    lira_auc = max(plain[name]["auc"] for name in plain if name.startswith("lira"))
    assert plain["loss"]["auc"] >= 0.75 and lira_auc >= 0.75, plain
    strongest_low_fpr = max(plain[name][LOW_FPR] for name in plain if name.startswith(("lira", "rmia")))
    assert strongest_low_fpr >= plain["loss"][LOW_FPR], plain
    assert report["candidates"] == {"members": 100, "non_members": 100, "pool": 200, "population": 100}
    assert report["reference_models"] == {"count": 4, "kind": "centralised stand-in", "epochs": 60}
    assert "dp" not in report and "empirical_epsilon_lower_bound" not in plain["loss"]
    scores = np.load(overfit_run / "attacks" / "membership_scores.npz")
    assert scores["is_member"].sum() == 100 and scores["plain__loss"].shape == (200,)
    assert (overfit_run / "attacks" / "membership_roc.png").stat().st_size > 5000
    # the report reads the attacked folder
    rows = write_report([overfit_run.parent], overfit_run.parent / "report")
    assert rows[0]["plain/loss/auc"] == plain["loss"]["auc"]
    table = (overfit_run.parent / "report.md").read_text()
    assert f"{plain['rmia']['auc']:.3f} / {plain['rmia'][LOW_FPR]:.1%}" in table
    assert (overfit_run.parent / "report.png").is_file() and (overfit_run.parent / "report.csv").is_file()


def test_no_false_signal_when_members_are_unseen_rows(
    cheap_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Members" drawn from the public split, which no client had: every attack must sit at chance."""
    folder = tmp_path / cheap_run.name
    shutil.copytree(cheap_run, folder, ignore=shutil.ignore_patterns("attacks"))
    common = load_run_folder(folder).finished.run[CommonSection]
    unseen = np.sort(public_split_rows(common))
    monkeypatch.setattr(candidates, "trained_rows", lambda *arguments: unseen)
    main([str(folder), "--reference-models", "2", "--members", "1000", "--non-members", "1000",
          "--population", "300", "--extra-pool", "0"])  # fmt: skip
    for name, metrics in membership(folder)["queries"]["plain"].items():
        assert metrics["auc"] == pytest.approx(0.5, abs=0.05), name


def public_split_rows(common: CommonSection) -> np.ndarray:
    from flwr_privshare.data import load_split, split_public

    return split_public(len(load_split(common.dataset, "train", common.data_dir)), common.public_size, common.seed)[0]


def test_ground_truth_members_were_trained_on_and_non_members_were_not(cheap_run: Path) -> None:
    """Checked on the images themselves, against every client's own partition."""
    loaded = load_run_folder(cheap_run)
    common = loaded.finished.run[CommonSection]
    data = membership_data(common, 2, members=150, non_members=150, population=100, extra=50, seed=3)

    def digests(images: np.ndarray) -> set[str]:
        return {hashlib.sha256(image.tobytes()).hexdigest() for image in images}

    trained = set().union(*(digests(client_partition(common, p, 2).images.numpy()) for p in range(2)))
    pool = data.pool.images.numpy()
    assert digests(pool[:150]) <= trained
    assert not digests(pool[150:]) & trained and not digests(data.population.images.numpy()) & trained
    assert len(digests(pool)) == len(pool) == 350 and not digests(pool) & digests(data.population.images.numpy())
    assert data.is_member.tolist() == [True] * 150 + [False] * 150
    assert not digests(public_split(common).images.numpy()) & digests(pool[:150])
    # the reference-model cache is keyed by which rows the pool holds, not only by how many
    again = membership_data(common, 2, members=150, non_members=150, population=100, extra=50, seed=3)
    other = membership_data(common, 2, members=150, non_members=150, population=101, extra=50, seed=3)
    assert again.pool_digest == data.pool_digest != other.pool_digest and len(other.pool) == len(data.pool)


def test_with_sampled_clients_members_come_from_the_partitions_that_trained(tmp_path: Path, data_root: Path) -> None:
    """5 clients, one sampled per round for 2 rounds: at most 2 partitions trained, and only their rows are members."""
    config = {**CHEAP, "fraction-train": 0.2, "num-server-rounds": 2, "data-dir": str(data_root / "mnist")}
    config.update({"output-dir": str(tmp_path), "run-name": "sampled"})
    run_in_process(VISUALMIXER, 5, config)
    folder = tmp_path / "sampled"
    participation = json.loads((folder / "participation.json").read_text())
    assert set(participation) == {"1", "2"} and all(len(partitions) == 1 for partitions in participation.values())
    with (folder / "rounds.csv").open() as rounds:
        replies = [row["train_replies"] for row in csv.DictReader(rounds) if row["round"] != "0"]
    assert replies == ["1", "1"]
    trained = {partitions[0] for partitions in participation.values()}
    common = load_run_folder(folder).finished.run[CommonSection]
    data = membership_data(common, 5, members=50, non_members=50, population=10, extra=0, seed=1,
                           participation={int(r): p for r, p in participation.items()})  # fmt: skip

    def digests(partitions: Iterable[int]) -> set[str]:
        images = [client_partition(common, partition, 5).images.numpy() for partition in partitions]
        return {hashlib.sha256(image.tobytes()).hexdigest() for image in np.concatenate(images)}

    members = {hashlib.sha256(image.tobytes()).hexdigest() for image in data.pool.images.numpy()[:50]}
    assert members <= digests(trained) and not members & digests(set(range(5)) - trained)
    main([str(folder), "--attack", "loss", "--members", "50", "--non-members", "50", "--population", "10"])
    assert membership(folder)["candidates"]["members"] == 50
    # without the record, a sampled run's members are unknown: refused
    (folder / "participation.json").unlink()
    shutil.rmtree(folder / "attacks")
    with pytest.raises(SystemExit):
        main([str(folder), "--attack", "loss", "--members", "50"])
    assert not (folder / "attacks").exists()


def test_same_folder_seed_and_options_give_the_same_scores(cheap_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / cheap_run.name
    shutil.copytree(cheap_run, folder, ignore=shutil.ignore_patterns("attacks"))
    options = ["--reference-models", "2", "--members", "100", "--non-members", "100", "--population", "100",
               "--extra-pool", "100", "--seed", "5"]  # fmt: skip
    main([str(folder), *options])
    first = dict(np.load(folder / "attacks" / "membership_scores.npz"))
    cache = {path: path.stat().st_mtime_ns for path in (folder / "attacks" / "reference-models").glob("*.pt")}
    assert len(cache) == 2
    main([str(folder), *options])  # a second attack reuses the cached reference models
    assert {path: path.stat().st_mtime_ns for path in cache} == cache
    cached = dict(np.load(folder / "attacks" / "membership_scores.npz"))
    shutil.rmtree(folder / "attacks")  # now they are trained again
    main([str(folder), *options])
    retrained = dict(np.load(folder / "attacks" / "membership_scores.npz"))
    assert first.keys() == cached.keys() == retrained.keys() and len(first) == 8
    for key in first:
        np.testing.assert_array_equal(first[key], cached[key], err_msg=key)
        np.testing.assert_array_equal(first[key], retrained[key], err_msg=key)
    main([str(folder), *options[:-1], "6"])
    assert not np.array_equal(
        np.load(folder / "attacks" / "membership_scores.npz")["plain__rmia"], first["plain__rmia"]
    )


def test_visualmixer_runs_are_attacked_with_plain_and_shuffled_records(tmp_path: Path, data_root: Path) -> None:
    folder = make_run(tmp_path, data_root / "mnist", {**CHEAP, "protection": "visualmixer"}, "mixed")
    main([str(folder), "--attack", "loss,lira", "--reference-models", "2", "--members", "100",
          "--non-members", "100", "--population", "50", "--extra-pool", "0"])  # fmt: skip
    report = membership(folder)
    assert set(report["queries"]) == {"plain", "shuffled"}
    assert set(report["queries"]["shuffled"]) == {
        "loss", "lira-online", "lira-online-fixed-variance", "lira-offline", "lira-offline-fixed-variance",
    }  # fmt: skip
    scores = np.load(folder / "attacks" / "membership_scores.npz")
    assert not np.array_equal(scores["plain__loss"], scores["shuffled__loss"])
    assert (folder / "attacks" / "membership_roc_shuffled.png").is_file()


def test_dp_runs_report_the_empirical_epsilon_beside_the_accountant(tmp_path: Path, data_root: Path) -> None:
    dp_sgd = {**CHEAP, "protection": "dp-sgd", "noise-multiplier": 1.0}
    folder = make_run(tmp_path, data_root / "mnist", dp_sgd, "dp", experiment=DP)
    main([str(folder), "--attack", "loss", "--members", "200", "--non-members", "200", "--population", "10"])
    report = membership(folder)
    accountant = json.loads((folder / "summary.json").read_text())["epsilon"]
    assert report["dp"] == {"accountant_epsilon": accountant, "delta": 1e-5} and accountant > 0
    assert report["reference_models"]["count"] == 0
    assert 0.0 <= report["queries"]["plain"]["loss"]["empirical_epsilon_lower_bound"] <= accountant


def test_federated_reference_models_are_reported_and_cached_apart(cheap_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / cheap_run.name
    shutil.copytree(cheap_run, folder, ignore=shutil.ignore_patterns("attacks"))
    options = ["--attack", "lira", "--reference-models", "2", "--members", "100", "--non-members", "100",
               "--population", "10", "--extra-pool", "0"]  # fmt: skip
    main([str(folder), *options, "--reference-training", "federated"])
    assert membership(folder)["reference_models"] == {
        "count": 2, "kind": "federated stand-in", "epochs": 1, "clients": 2,
    }  # fmt: skip
    federated = dict(np.load(folder / "attacks" / "membership_scores.npz"))
    main([str(folder), *options])
    assert membership(folder)["reference_models"]["kind"] == "centralised stand-in"
    assert len(list((folder / "attacks" / "reference-models").glob("*.pt"))) == 4
    centralised = np.load(folder / "attacks" / "membership_scores.npz")
    assert not np.array_equal(federated["plain__lira-online"], centralised["plain__lira-online"])


@pytest.mark.slow  # a DPM run, its attack and a DPM reference model; the attacks run on FedAvg runs in every CI run
def test_dpm_runs_are_queried_through_the_shared_featurizer_and_the_refined_head(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_run(tmp_path, data_root / "cifar10", DPM_SMALL, "dpm", experiment=DPM)
    loaded = load_run_folder(folder)
    run = loaded.finished.run
    common = run[CommonSection]
    # ground truth: the rows some client shared features of (64 of its 96 rows in each of 2 rounds)
    shared = shared_rows(common, run[DPMSection], 2)
    partitions = set(np.concatenate([client_rows(common, partition, 2) for partition in range(2)]).tolist())
    assert set(shared.tolist()) < partitions and 128 < len(shared) < 192
    main([str(folder), "--attack", "loss,lira", "--reference-models", "2", "--members", "100",
          "--non-members", "100", "--population", "20", "--extra-pool", "0"])  # fmt: skip
    report = membership(folder)
    assert set(report["queries"]) == {"plain"} and report["candidates"]["members"] == 100
    assert set(report["queries"]["plain"]) >= {"loss", "lira-online", "lira-offline"}
    # a reference model starts from the run's own phi1 (recomputed from the public split) and refines phi2 only
    trainer = DPMReferenceTrainer(run, loaded.finished.model_name, 1, torch.device("cpu"), None, num_clients=2)
    reference = trainer.train(loaded.finished.test_sets["plain"].head(100), 0)
    hook = run[DPMSection].dpm_hook
    target_split = split_model(loaded.finished.model, hook)
    reference_split = split_model(reference, hook)
    for (name, target), (_, stand_in) in zip(
        target_split.featurizer.state_dict().items(), reference_split.featurizer.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(stand_in, target, msg=name)
    # phi2 was refined away from the bootstrap's, on the reference model's own poisoned features
    assert not torch.equal(reference.classifier.weight, trainer.procedure.bootstrap["classifier.weight"])
    # runs whose shared rows cannot be recomputed are refused before any work
    for name, file, edit, message in (
        ("fedavg-bootstrap", "config.json", ("config", "dpm-bootstrap", "fedavg"), "needs dpm-bootstrap = 'server'"),
        ("rejected", "summary.json", ("rejected_replies", 1), "1 feature-sharing replies were withheld or rejected"),
    ):
        copy = tmp_path / name
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("attacks"))
        content = json.loads((copy / file).read_text())
        *parents, key, value = edit
        target = content[parents[0]] if parents else content
        target[key] = value
        (copy / file).write_text(json.dumps(content))
        with pytest.raises(SystemExit):
            main([str(copy), "--members", "100", "--extra-pool", "0"])
        assert message in capsys.readouterr().err and not (copy / "attacks").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--attack", "loss,gan"], "--attack must name some of loss, shadow, lira, rmia, inversion, got 'loss,gan'"),
        (["--members", "201"], "--members must be in [1, 200]"),
        (["--non-members", "9000", "--population", "2000"], "together at most 10000"),
        (["--reference-models", "300"], "--reference-models must be in [1, 256]"),
        (["--attack", "lira", "--reference-models", "1"], "at least 2 for lira"),
        (["--extra-pool", "9000"], "--extra-pool must be in [0, 8000]"),
        (["--reference-training", "gossip"], "--reference-training must be one of centralised, federated"),
        (["--attack", "inversion"], "run-config key 'protection' is 'none'; the inversion attack needs a run whose"),
        (["--attack", "inversion", "--inversion-epochs", "0"], "--inversion-epochs is 0; it must be a positive"),
    ],
)
def test_bad_options_fail_before_any_work(
    cheap_run: Path, arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main([str(cheap_run), "--members", "100", *arguments])
    assert raised.value.code == 2
    assert message in capsys.readouterr().err
    assert not (cheap_run / "attacks").exists()


def test_bad_run_folders_fail_before_any_work(
    cheap_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    without_model = tmp_path / "no-model"
    shutil.copytree(cheap_run, without_model, ignore=shutil.ignore_patterns("attacks", "model.pt"))
    old_format = tmp_path / "old"
    shutil.copytree(cheap_run, old_format, ignore=shutil.ignore_patterns("attacks"))
    config = json.loads((old_format / "config.json").read_text())
    del config["format"]
    (old_format / "config.json").write_text(json.dumps(config))
    incomplete = tmp_path / ".crashed.incomplete"
    shutil.copytree(cheap_run, incomplete, ignore=shutil.ignore_patterns("attacks"))
    cases = {
        without_model: "it has no model.pt",
        old_format: "written in run-folder format 'none'",
        incomplete: "is an incomplete run",
        tmp_path / "missing": "does not exist",
    }
    for folder, message in cases.items():
        with pytest.raises(SystemExit):
            main([str(cheap_run), str(folder), "--members", "100"])  # the good folder first: not attacked either
        assert message in capsys.readouterr().err
        assert not (cheap_run / "attacks").exists() and not (folder / "attacks").exists()
