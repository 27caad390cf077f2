"""offrl plot: curve aggregation on hand numbers, and a real PNG with the expected lines."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from offrl.commands.plot import plot
from offrl.plot import Curve, aggregate, find_runs, load_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_json(path: Path, points: list[tuple[float, float]], partial_tail: bool = False) -> Path:
    path.mkdir(parents=True)
    text = "".join(
        json.dumps({"timesteps_total": x, "episode_reward_mean": y, "training_iteration": i}) + "\n"
        for i, (x, y) in enumerate(points, 1)
    )
    (path / "result.json").write_text(text + ('{"timesteps_tot' if partial_tail else ""))
    return path


def run_csv(path: Path, points: list[tuple[float, float]]) -> Path:
    path.mkdir(parents=True)
    with open(path / "progress.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["training_iteration", "timesteps_total", "episode_reward_mean"])
        for i, (x, y) in enumerate(points, 1):
            w.writerow([i, x, y])
    return path


def test_aggregate_hand_computed() -> None:
    a = Curve(Path("a"), "g", np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 2.0]))
    b = Curve(Path("b"), "g", np.array([0.0, 20.0, 30.0]), np.array([2.0, 4.0, 9.0]))
    g = aggregate([a, b])
    # Shared range [0, 20]; b at x=10 interpolates to 3.
    assert g.x.tolist() == [0.0, 10.0, 20.0]
    assert g.mean.tolist() == [1.0, 2.0, 3.0]
    assert g.low.tolist() == [0.0, 1.0, 2.0]
    assert g.high.tolist() == [2.0, 3.0, 4.0]
    assert g.runs == 2


def test_load_curve_skips_partial_last_line_and_sorts(tmp_path: Path) -> None:
    run = run_json(tmp_path / "exp" / "r1", [(20, 2.0), (10, 1.0)], partial_tail=True)
    c = load_curve(run, "timesteps_total", "episode_reward_mean")
    assert c.x.tolist() == [10.0, 20.0] and c.y.tolist() == [1.0, 2.0]
    assert c.group == "exp"


def test_find_runs_in_experiment_dir(tmp_path: Path) -> None:
    run_json(tmp_path / "exp" / "r2", [(0, 0)])
    run_csv(tmp_path / "exp" / "r1", [(0, 0)])
    assert find_runs([tmp_path / "exp"]) == [tmp_path / "exp" / "r1", tmp_path / "exp" / "r2"]


def color_pixels(image: np.ndarray, color: str) -> int:
    from matplotlib.colors import to_rgb

    rgb = np.array(to_rgb(color))
    return int((np.abs(image[..., :3] - rgb) < 0.02).all(axis=-1).sum())


def test_png_has_one_line_per_experiment(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    exp_a = [
        run_json(tmp_path / "a" / f"r{s}", [(0, s), (100, 10 + s), (200, 50 + s)]) for s in range(3)
    ]
    exp_b = run_csv(tmp_path / "b" / "r0", [(0, 5), (200, 20)])
    out = tmp_path / "curve.png"
    res = CliRunner().invoke(plot, [*map(str, exp_a), str(exp_b), "-o", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["curves"] == [{"name": "a", "runs": 3}, {"name": "b", "runs": 1}]
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(out)
    assert image.shape[:2] == (450, 700)
    assert color_pixels(image, "C0") > 100  # experiment a's mean line
    assert color_pixels(image, "C1") > 100  # experiment b's line
    assert color_pixels(image, "C2") == 0  # and no third line


def test_unknown_key_exits_1_naming_the_keys_and_writes_nothing(tmp_path: Path) -> None:
    run = run_json(tmp_path / "e" / "r", [(0, 1)])
    res = CliRunner().invoke(plot, [str(run), "--y", "nope", "-o", str(tmp_path / "c.png")])
    assert res.exit_code == 1
    assert "nothing to plot" in res.output
    assert "'nope'" in res.output and "episode_reward_mean" in res.output
    assert not (tmp_path / "c.png").exists()


def test_not_a_run_dir_is_usage_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(plot, [str(tmp_path), "-o", str(tmp_path / "c.png")])
    assert res.exit_code == 2
    assert "no result.json or progress.csv" in res.output


def test_failed_run_and_runs_without_the_key_are_skipped_with_a_warning(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    good = run_json(tmp_path / "e" / "good", [(0, 1), (10, 2)])
    failed = tmp_path / "e" / "failed"
    failed.mkdir()
    (failed / "result.json").write_text("")
    offline = tmp_path / "e" / "offline"
    offline.mkdir()
    (offline / "result.json").write_text('{"timesteps_total": 5, "training_iteration": 1}\n')
    out = tmp_path / "c.png"
    res = CliRunner().invoke(plot, [str(good), str(failed), str(offline), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert f"warning: skipped {failed}: no results" in res.stderr
    assert f"warning: skipped {offline}: no 'episode_reward_mean'" in res.stderr
    assert json.loads(res.stdout)["curves"] == [{"name": "e", "runs": 1}]
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_only_failed_runs_exit_1_and_write_no_chart(tmp_path: Path) -> None:
    failed = tmp_path / "e" / "failed"
    failed.mkdir(parents=True)
    (failed / "result.json").write_text("")
    res = CliRunner().invoke(plot, [str(failed), "-o", str(tmp_path / "c.png")])
    assert res.exit_code == 1 and "nothing to plot" in res.output and "no results" in res.output
    assert not (tmp_path / "c.png").exists()


def test_title_names_the_algorithm_and_env(tmp_path: Path) -> None:
    from offrl.plot import run_title

    a = run_json(tmp_path / "e" / "a", [(0, 1)])
    b = run_json(tmp_path / "e" / "b", [(0, 1)])
    (a / "params.json").write_text(json.dumps({"run": "PG", "env": "CartPole-v1"}))
    (b / "params.json").write_text(json.dumps({"run": "DQN", "env": "CartPole-v1"}))
    assert run_title([a, b]) == "PG, DQN on CartPole-v1"
    assert run_title([tmp_path]) == ""


def test_binary_result_json_is_a_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "e" / "r"
    run.mkdir(parents=True)
    (run / "result.json").write_bytes(bytes(range(256)))
    res = CliRunner().invoke(plot, [str(run), "-o", str(tmp_path / "c.png")])
    assert res.exit_code == 1 and "not text" in res.output and str(run) in res.output


def test_existing_output_is_never_overwritten(tmp_path: Path) -> None:
    run = run_json(tmp_path / "e" / "r", [(0, 1), (1, 2)])
    out = tmp_path / "c.png"
    out.write_bytes(b"keep me")
    res = CliRunner().invoke(plot, [str(run), "-o", str(out)])
    assert res.exit_code == 2 and "exists" in res.output and "never overwrites" in res.output
    assert out.read_bytes() == b"keep me"


def test_output_folder_is_created_and_a_file_in_the_way_is_named(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = run_json(tmp_path / "e" / "r", [(0, 1), (1, 2)])
    res = CliRunner().invoke(plot, [str(run), "-o", str(tmp_path / "new" / "c.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "new" / "c.png").read_bytes()[:8] == PNG_SIGNATURE
    (tmp_path / "file").write_text("x")
    res = CliRunner().invoke(plot, [str(run), "-o", str(tmp_path / "file" / "c.png")])
    assert res.exit_code == 1 and "cannot create the folder" in res.output
    assert "Traceback" not in res.output
