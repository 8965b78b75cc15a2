"""privshare-sweep: the spec is checked before anything runs; cells run, resume, fail alone, and are reported."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from flwr_privshare.sweep import CellOutcome, SpecError, load_spec, run_sweep, write_report
from flwr_privshare.sweep.__main__ import main
from flwr_privshare.sweep.report import aggregate, markdown

ROOT = Path(__file__).resolve().parents[1]
FAULTY_APP = ROOT / "tests" / "faulty_app"


def write_spec(tmp_path: Path, data_root: Path, text: str = "", methods: str = "") -> Path:
    """A spec over the faulty test app on tiny MNIST runs, with ``text`` added at the top level."""
    methods = methods or (
        '[methods.plain]\nprotection = "none"\n\n'
        '[methods.dp-fedavg]\nprotection = "dp-fedavg"\nfail-partitions = "0"\n'  # one client raises every round
    )
    spec = tmp_path / "sweep.toml"
    spec.write_text(
        f'app = "{FAULTY_APP}"\noutput-dir = "out"\nclients = [2, 3]\nseeds = [7]\n{text}\n'
        "federation = { client-resources-num-cpus = 1 }\n\n"
        f'[base]\ndata-dir = "{data_root / "mnist"}"\ndataset = "ylecun/mnist"\nnum-server-rounds = 1\n'
        "samples-per-client = 16\ntest-size = 64\npublic-size = 0\nbatch-size = 16\n\n" + methods
    )
    return spec


@pytest.mark.parametrize(
    ("text", "methods", "chosen", "message"),
    [
        ("seed = 3", "", None, "unknown key 'seed' \\(did you mean 'seeds'\\?\\)"),
        ("", "", ["plain", "dp-fedavgg"], "method 'dp-fedavgg' is not in the spec \\(did you mean 'dp-fedavg'\\?\\)"),
        ("", '[methods.m]\nprotection = "nope"\n', None, "methods.m \\(with base\\): run-config key 'protection' is"),
        ("", "[methods.m]\nlearning-rat = 0.1\n", None, "methods.m \\(with base\\): .*'learning-rat'.*'learning-rate'"),
        ("", "[methods.m]\nseed = 3\n", None, "methods.m.seed: the sweep sets output-dir, run-name, seed"),
        ("attacks = { names = ['lora'] }", "", None, "attacks.names: \\['lora'\\]; each must be one of"),
    ],
)
def test_a_bad_spec_fails_naming_the_field(
    tmp_path: Path, data_root: Path, text: str, methods: str, chosen: list[str] | None, message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(write_spec(tmp_path, data_root, text, methods), chosen)


def test_a_non_positive_client_count_fails_before_anything_runs(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, data_root)
    spec.write_text(spec.read_text().replace("clients = [2, 3]", "clients = [2, 0]"))
    with pytest.raises(SystemExit) as stopped:
        main([str(spec)])
    assert stopped.value.code == 2 and "clients: 0 is not a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sigterm_stops_the_sweep_with_exit_130_and_says_the_finished_cells_are_kept(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The SIGTERM unwinds like Ctrl-C (so the running cell's run and the SuperLink are stopped: see
    # test_launch); here it arrives while the sweep runs, in this process.
    import flwr_privshare.sweep as sweep

    def terminated(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(sweep, "run_sweep", terminated)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stopped:
            main([str(write_spec(tmp_path, data_root)), "--quiet"])
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert stopped.value.code == 130
    assert "privshare-sweep: interrupted (signal SIGTERM); the running cell was stopped" in capsys.readouterr().err


def test_the_aggregates_are_the_mean_and_spread_over_seeds() -> None:
    rows = [
        {"method_name": "a", "num_clients": 10, "accuracy": 0.5, "epsilon": None, "round_time_s": 2.0},
        {"method_name": "a", "num_clients": 10, "accuracy": 0.7, "epsilon": None, "round_time_s": 4.0},
        {"method_name": "a", "num_clients": 10, "status": "failed"},
    ]
    (entry,) = aggregate(rows)
    assert (entry["seeds"], entry["finished"]) == (3, 2)
    assert entry["accuracy_mean"] == pytest.approx(0.6) and entry["accuracy_std"] == pytest.approx(0.1414, abs=1e-4)
    assert entry["epsilon_mean"] is None and entry["round_time_s_mean"] == pytest.approx(3.0)


def test_the_table_shows_a_spread_only_where_more_than_one_seed_finished(tmp_path: Path, data_root: Path) -> None:
    rows = [
        {"method_name": "plain", "num_clients": 2, "accuracy": 0.5, "round_time_s": 2.0},
        {"method_name": "plain", "num_clients": 2, "accuracy": 0.7, "round_time_s": 4.0},
        {"method_name": "plain", "num_clients": 3, "accuracy": 0.4, "round_time_s": 5.0},
    ]
    report = markdown(load_spec(write_spec(tmp_path, data_root)), aggregate(rows), [])
    assert "| plain | 2 | 2/2 | 60.0% ± 14.1% | 3 ± 1.4 |" in report
    assert "| plain | 3 | 1/1 | 40.0% | 5 |" in report


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> tuple[Path, list[CellOutcome]]:
    """2 methods x 2 client counts x 1 round, run once for the module; a third method is broken on purpose."""
    folder = tmp_path_factory.mktemp("sweep")
    methods = (
        '[methods.plain]\nprotection = "none"\n\n'
        '[methods.dp-fedavg]\nprotection = "dp-fedavg"\nfail-partitions = "0"\n\n'  # one client raises every round
        f'[methods.broken]\ndata-dir = "{folder / "missing"}"\n'  # passes the spec check, fails the run
    )
    spec = write_spec(folder, data_root, methods=methods)
    outcomes = run_sweep(load_spec(spec, ["plain", "dp-fedavg"]), progress=False)
    return spec, outcomes


def test_a_small_sweep_runs_every_cell_and_reports_it(small_sweep: tuple[Path, list[CellOutcome]]) -> None:
    spec_path, outcomes = small_sweep
    assert [(o.cell.name, o.status) for o in outcomes] == [
        ("plain-c2-s7", "ran"),
        ("plain-c3-s7", "ran"),
        ("dp-fedavg-c2-s7", "ran"),
        ("dp-fedavg-c3-s7", "ran"),
    ]
    write_report(load_spec(spec_path, ["plain", "dp-fedavg"]), outcomes)
    out = spec_path.parent / "out"
    rows = {row["cell"]: row for row in csv.DictReader((out / "sweep.csv").open())}
    assert rows["plain-c3-s7"]["clients"] == "3" and rows["plain-c3-s7"]["epsilon"] == ""
    assert float(rows["dp-fedavg-c2-s7"]["epsilon"]) > 0
    noise = json.loads((out / "runs" / "dp-fedavg-c2-s7" / "summary.json").read_text())["privacy"]["dp-fedavg"]
    assert float(rows["dp-fedavg-c2-s7"]["noise_multiplier"]) == noise["noise_multiplier"]
    assert rows["plain-c2-s7"]["noise_multiplier"] == "" and rows["plain-c2-s7"]["plain_accuracy"] == ""
    assert json.loads((out / "sweep.json").read_text())["spec"] == "../sweep.toml"  # portable: relative to it
    summary = json.loads((out / "runs" / "dp-fedavg-c3-s7" / "summary.json").read_text())
    assert summary["client_failures"] == 1 and summary["seed"] == 7  # the raising client is counted, the run went on
    for plot in ("accuracy_vs_clients", "epsilon_vs_clients", "round_time_vs_clients"):
        assert (out / f"{plot}.png").stat().st_size > 1000
    report = (out / "sweep.md").read_text()
    assert "| dp-fedavg | 3 | 1/1 |" in report and "| noise multiplier |" in report
    # the method that was not selected is in the tables, as not run yet
    assert "| broken | 2 | 0/1 |" in report and "Not run yet: `broken-c2-s7`, `broken-c3-s7`." in report


def test_the_tables_cover_every_method_whichever_ran_and_report_only_runs_nothing(
    small_sweep: tuple[Path, list[CellOutcome]], capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path, outcomes = small_sweep
    out = spec_path.parent / "out"
    modified = {path: path.stat().st_mtime_ns for path in (out / "runs").rglob("*") if path.is_file()}
    plain_only = load_spec(spec_path, ["plain"])
    assert [cell.name for cell in plain_only.selected_cells()] == ["plain-c2-s7", "plain-c3-s7"]
    three = load_spec(spec_path, None, [3])
    assert [cell.name for cell in three.selected_cells()] == ["plain-c3-s7", "dp-fedavg-c3-s7", "broken-c3-s7"]
    with pytest.raises(SpecError, match=r"client count 5 is not in the spec; it has \[2, 3\]"):
        load_spec(spec_path, None, [5])
    write_report(plain_only, [o for o in outcomes if o.cell.method == "plain"])
    assert "| dp-fedavg | 3 | 1/1 |" in (out / "sweep.md").read_text()  # finished before: still reported
    (out / "sweep.md").unlink()
    with pytest.raises(SystemExit) as stopped:
        main([str(spec_path), "--report-only"])
    assert stopped.value.code == 0 and "| plain | 2 | 1/1 |" in capsys.readouterr().out
    rows = {row["cell"]: row["status"] for row in csv.DictReader((out / "sweep.csv").open())}
    assert rows == {
        **dict.fromkeys([o.cell.name for o in outcomes], "skipped"),
        "broken-c2-s7": "not run",
        "broken-c3-s7": "not run",
    }
    assert {path: path.stat().st_mtime_ns for path in (out / "runs").rglob("*") if path.is_file()} == modified


def test_a_deleted_run_folder_keeps_its_row_until_its_settings_change(
    small_sweep: tuple[Path, list[CellOutcome]], tmp_path: Path
) -> None:
    spec_path, outcomes = small_sweep
    write_report(load_spec(spec_path), outcomes)
    spec = tmp_path / "sweep.toml"
    shutil.copy(spec_path, spec)
    shutil.copytree(spec_path.parent / "out", tmp_path / "out")
    shutil.rmtree(tmp_path / "out" / "runs" / "dp-fedavg-c2-s7")
    before = {row["cell"]: row for row in csv.DictReader((tmp_path / "out" / "sweep.csv").open())}

    write_report(load_spec(spec))
    rows = {row["cell"]: row for row in csv.DictReader((tmp_path / "out" / "sweep.csv").open())}
    assert rows["dp-fedavg-c2-s7"]["status"] == "recorded"
    assert rows["dp-fedavg-c2-s7"]["accuracy"] == before["dp-fedavg-c2-s7"]["accuracy"] != ""
    assert rows["dp-fedavg-c2-s7"]["epsilon"] == before["dp-fedavg-c2-s7"]["epsilon"] != ""
    report = (tmp_path / "out" / "sweep.md").read_text()
    assert "| dp-fedavg | 2 | 1/1 |" in report and "run folders gone): `dp-fedavg-c2-s7`." in report
    write_report(load_spec(spec))  # kept again from the report that kept it
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["cells"][2]["status"] == "recorded"

    spec.write_text(spec.read_text().replace('fail-partitions = "0"', 'fail-partitions = "1"'))
    write_report(load_spec(spec))  # another setting: the old row no longer counts for the cell
    rows = {row["cell"]: row for row in csv.DictReader((tmp_path / "out" / "sweep.csv").open())}
    assert rows["dp-fedavg-c2-s7"]["status"] == "not run" and rows["dp-fedavg-c2-s7"]["accuracy"] == ""
    assert rows["dp-fedavg-c3-s7"]["status"] == "skipped"  # its folder is there: read from it


def test_rerunning_a_finished_sweep_runs_nothing(small_sweep: tuple[Path, list[CellOutcome]]) -> None:
    spec_path, _ = small_sweep
    runs = spec_path.parent / "out" / "runs"
    modified = {path: path.stat().st_mtime_ns for path in runs.rglob("summary.json")}
    again = run_sweep(load_spec(spec_path, ["plain", "dp-fedavg"]), progress=False)
    assert [o.status for o in again] == ["skipped"] * 4
    assert {path: path.stat().st_mtime_ns for path in runs.rglob("summary.json")} == modified


def test_a_failed_run_is_recorded_with_its_log_and_the_next_cell_runs(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the runner's bookkeeping alone (the flwr run of a failing cell is the slow test below): every cell's run
    # fails with its own log, every cell is tried, the report lists them and the exit status is 1
    import flwr_privshare.sweep.runner as runner
    from flwr_privshare.launch import RunOutcome

    tried: list[int] = []

    def failing_run(app: object, config: dict, federation: str, **kwargs: object) -> RunOutcome:  # type: ignore[type-arg]
        tried.append(int(federation.split("num-supernodes=")[1].split()[0]))
        return RunOutcome(0, "finished:failed", f"the log of a run of {federation}")

    monkeypatch.setattr(runner, "run_app", failing_run)
    spec_path = write_spec(tmp_path, data_root, methods='[methods.plain]\nprotection = "none"\n')
    with pytest.raises(SystemExit) as stopped:
        main([str(spec_path), "--quiet"])
    assert stopped.value.code == 1 and tried == [2, 3]
    out = tmp_path / "out"
    assert "num-supernodes=2" in (out / "failed" / "plain-c2-s7.log").read_text()
    report = (out / "sweep.md").read_text()
    assert "- `plain-c2-s7`: the run ended finished:failed" in report and "- `plain-c3-s7`" in report
    assert not (out / "runs" / "plain-c2-s7").exists()


@pytest.mark.slow  # two real flwr runs that fail; the bookkeeping runs in every CI run (the test above)
def test_a_failed_cell_is_recorded_with_its_log_and_the_sweep_goes_on(
    small_sweep: tuple[Path, list[CellOutcome]], capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path, _ = small_sweep
    with pytest.raises(SystemExit) as stopped:
        main([str(spec_path), "--methods", "broken,plain", "--quiet"])
    assert stopped.value.code == 1
    out = spec_path.parent / "out"
    assert "not a readable folder" in (out / "failed" / "broken-c2-s7.log").read_text()
    assert not (out / "runs" / "broken-c2-s7").exists() and not (out / "runs" / ".broken-c2-s7.incomplete").exists()
    report = (out / "sweep.md").read_text()
    assert "- `broken-c3-s7`: the run ended finished:failed" in report and "| plain | 3 | 1/1 |" in report


def test_the_attacks_of_the_spec_run_on_cells_not_attacked_yet(tmp_path: Path, data_root: Path) -> None:
    from flwr_privshare.sweep.runner import attack_command

    spec = load_spec(
        write_spec(tmp_path, data_root, "attacks = { names = ['loss', 'inversion'], reference-models = 2 }")
    )
    folder = tmp_path / "cell"
    command = attack_command(spec, folder)
    assert command is not None and command[1:] == [
        "-m", "flwr_privshare.attacks.cli", str(folder), "--attack", "loss,inversion", "--reference-models=2"
    ]  # fmt: skip
    (folder / "attacks").mkdir(parents=True)
    (folder / "attacks" / "membership.json").write_text("{}")
    assert attack_command(spec, folder)[4:6] == ["--attack", "inversion"]  # type: ignore[index]
    (folder / "attacks" / "inversion.json").write_text("{}")
    assert attack_command(spec, folder) is None
