"""Open-loop report video, GIF/plot files, and the logger front end (CSV, TensorBoard, wandb)."""
import importlib.util
import os

import pytest
import torch
from PIL import Image
from torchrl.data import OneHot

from test_objectives import _window
from torchrl_dreamerv3.modules import make_dreamerv3
from torchrl_dreamerv3.replay import split_context
from torchrl_dreamerv3.training.reporting.logging import MetricLogger, make_logger, make_metric_logger
from torchrl_dreamerv3.training.reporting.report import (
    open_loop_report,
    open_loop_video,
    plot_curves,
    plot_returns,
    read_returns_csv,
    save_gif,
)

IMG = {"pixels": (3, 16, 16)}
B, T, H, W = 5, 6, 16, 16


@pytest.fixture(scope="module")
def agent():
    torch.manual_seed(0)
    return make_dreamerv3(IMG, OneHot(3), "debug")


@pytest.fixture
def window(agent):
    return _window(agent, IMG, B=B, T=T)


def _panels(frames, row):
    """(truth, prediction, error) of one grid row: each (T, C, H, W)."""
    cells = frames[:, :, row * H:(row + 1) * H]
    return cells[..., :W], cells[..., W:2 * W], cells[..., 2 * W:]


def _to_uint8(x):
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------- open-loop video

def test_video_shape_and_truth_panel(agent, window):
    frames, metrics = open_loop_report(agent, window)
    assert frames.shape == (T, 3, 4 * H, 3 * W) and frames.dtype == torch.uint8
    for row in range(4):
        truth, _, _ = _panels(frames, row)
        assert torch.equal(truth, window["pixels"][row, 1:])  # rows 1..T of the window
    assert set(metrics) == {"openl_mse_obs", "openl_mse_imag", "openl_reward_mse_obs", "openl_reward_mse_imag"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in metrics.values())
    assert open_loop_video(agent, window, rows=2).shape == (T, 3, 2 * H, 3 * W)


def _direct_latents(agent, window, context):
    """The report's latents, rebuilt by hand: posterior for steps < context, then the prior driven by the
    recorded actions."""
    data = split_context(window)
    post = agent.observe(agent.encoder(data[:, :context]))
    states, state = [post.select("deter", "stoch")], post[:, -1].select("deter", "stoch")
    for t in range(context, T):
        state = agent.imagine_step(state.clone().set("action", data[:, t]["prev_action"]))
        states.append(state.select("deter", "stoch").unsqueeze(1))
    return torch.cat(states, 1)


def test_panels_match_a_direct_world_model_rollout(agent, window):
    """Posterior reconstructions for steps < context, then the prior driven by the recorded actions."""
    context = 3
    torch.manual_seed(1)
    frames = open_loop_video(agent, window, context=context)
    torch.manual_seed(1)  # the report forks the RNG, so the same draws happen here
    with torch.no_grad():
        reco = agent.decoder(_direct_latents(agent, window, context))["reco", "pixels"]
    for row in range(4):
        truth, pred, error = _panels(frames, row)
        assert torch.equal(pred, _to_uint8(reco[row]))
        expected = _to_uint8(0.5 + (reco[row] - truth.float() / 255) / 2)
        assert torch.equal(error, expected)


def test_reward_errors_are_the_reward_heads_error_on_the_reported_latents(agent, window):
    """Posterior latents for steps < context, prior latents after; reward = the one that arrived with the step."""
    context = 3
    torch.manual_seed(1)
    metrics = open_loop_report(agent, window, context=context)[1]
    torch.manual_seed(1)
    with torch.no_grad():
        predicted = agent.reward(_direct_latents(agent, window, context))["reward_pred"][..., 0]
    error = (predicted - window["next", "reward"][:, :-1, 0]).square()  # row t's reward arrives with row t + 1
    torch.testing.assert_close(metrics["openl_reward_mse_obs"], error[:, :context].mean())
    torch.testing.assert_close(metrics["openl_reward_mse_imag"], error[:, context:].mean())


def test_imagination_follows_recorded_actions(agent, window):
    context = 3
    torch.manual_seed(2)
    base = open_loop_video(agent, window, context=context)
    changed = window.clone()
    # Window rows >= context hold the actions that lead to the imagined steps context..T-1.
    changed["action"][:, context:] = torch.roll(changed["action"][:, context:], 1, dims=-1)
    torch.manual_seed(2)
    other = open_loop_video(agent, changed, context=context)
    assert torch.equal(base[:context], other[:context])
    assert not torch.equal(base[context:], other[context:])


def test_report_changes_no_state(agent, window):
    agent.train()
    torch.manual_seed(3)
    before = torch.rand(3)
    torch.manual_seed(3)
    open_loop_video(agent, window)
    assert torch.equal(torch.rand(3), before)  # global RNG untouched
    assert all(m.training for m in agent.modules())


def test_report_errors(agent, window):
    with pytest.raises(ValueError, match="context"):
        open_loop_video(agent, window, context=T + 1)
    vec_agent = make_dreamerv3({"observation": (5,)}, OneHot(3), "debug")
    with pytest.raises(ValueError, match="image observation"):
        open_loop_video(vec_agent, _window(vec_agent, {"observation": (5,)}))


def test_gray_images_and_gif(tmp_path):
    shapes = {"pixels": (1, 16, 16)}
    gray = make_dreamerv3(shapes, OneHot(3), "debug")
    frames = open_loop_video(gray, _window(gray, shapes, B=2, T=T))
    assert frames.shape == (T, 1, 2 * H, 3 * W)
    path = save_gif(frames, tmp_path / "gray.gif", fps=4)
    with Image.open(path) as im:
        assert im.n_frames == T and im.size == (3 * W, 2 * H)


def test_rgb_gif_and_plots(agent, window, tmp_path):
    frames = open_loop_video(agent, window)
    with Image.open(save_gif(frames, tmp_path / "v" / "rgb.gif")) as im:
        assert im.n_frames == T and im.size == (3 * W, 4 * H)
    with pytest.raises(ValueError, match="uint8"):
        save_gif(frames.float(), tmp_path / "bad.gif")
    steps, returns = list(range(0, 500, 10)), [float(i % 7) for i in range(50)]
    assert Image.open(plot_returns(steps, returns, tmp_path / "returns.png", title="t")).format == "PNG"
    runs = {"seed0": (steps, returns), "seed1": ([s + 5 for s in steps], returns[::-1])}
    assert Image.open(plot_curves(runs, tmp_path / "curves.png", bins=10)).format == "PNG"


# ---------------------------------------------------------------- loggers

def test_csv_metric_logger_files(tmp_path):
    log = make_metric_logger("csv", str(tmp_path), "run")
    run = tmp_path / "run"
    logged = log.log_scalars({"loss": torch.tensor(1.5), "opt/grad_norm": 2.0}, step=10, prefix="train")
    assert logged == {"train/loss": 1.5, "train/opt/grad_norm": 2.0}
    assert (run / "scalars" / "train" / "opt" / "grad_norm.csv").read_text() == "10,2.0\n"
    log.log_episode(100, 3.0, length=20)
    log.log_episode(200, 5.0)
    assert log.episode_returns == [(100, 3.0), (200, 5.0)]
    assert read_returns_csv(run / "episodes.csv") == ([100.0, 200.0], [3.0, 5.0])
    assert read_returns_csv(run / "scalars" / "episode" / "return.csv") == ([100.0, 200.0], [3.0, 5.0])
    frames = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    gif = log.log_video("report/openl_pixels", frames, step=7)
    assert gif == str(run / "videos" / "report" / "openl_pixels_7.gif") and os.path.exists(gif)
    assert torch.equal(torch.load(run / "videos" / "report" / "openl_pixels_7.pt"), frames[None])
    log.log_hparams({"lr": 1e-4, "model": {"size": "debug", "mults": [1, 2]}})
    assert "model/size: debug" in (run / "texts" / "hparams0.txt").read_text()
    assert os.path.exists(log.plot_returns())
    log.close()


def test_make_logger_backends(tmp_path, monkeypatch):
    assert make_logger("none", str(tmp_path), "x") is None and make_logger("", str(tmp_path), "x") is None
    with pytest.raises(ValueError, match="csv, tensorboard, wandb, none"):
        make_logger("mlflow2", str(tmp_path), "x")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ImportError, match=r"torchrl_dreamerv3\[tensorboard\]"):
        make_logger("tensorboard", str(tmp_path), "x")


def test_no_backend_keeps_record(tmp_path):
    log = MetricLogger(None, tmp_path)
    log.log_scalars({"sps": 3}, step=1, prefix="perf")
    log.log_episode(5, 1.0)
    assert log.episode_returns == [(5, 1.0)]
    assert log.log_video("eval/policy", torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 1).endswith("policy_1.gif")


def test_a_plain_install_without_matplotlib_or_pillow_skips_the_png_and_gif_with_one_warning(tmp_path, monkeypatch):
    """``pip install torchrl_dreamerv3`` has neither: a run must not fail at its first save for a picture."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("matplotlib", "PIL") else real(name, *a))
    log = MetricLogger(None, tmp_path)
    log.log_episode(5, 1.0)
    with pytest.warns(UserWarning, match=r"matplotlib is not installed: returns.png not written .*\[plot\]"):
        assert log.plot_returns() is None
    with pytest.warns(UserWarning, match=r"PIL is not installed: the open-loop GIFs not written .*\[atari\]"):
        assert log.log_video("openloop", torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 1) is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time: silent
        assert log.plot_returns() is None
    assert not (tmp_path / "returns.png").exists() and (tmp_path / "episodes.csv").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_logger(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = make_metric_logger("tensorboard", str(tmp_path), "run")
    log.log_scalars({"loss": torch.tensor(0.5)}, step=3, prefix="train")
    with pytest.warns(UserWarning, match="GIFs only") if importlib.util.find_spec("moviepy") is None else _null():
        gif = log.log_video("report/openl", torch.zeros(3, 3, 4, 4, dtype=torch.uint8), step=3)
    assert os.path.exists(gif)
    log.log_hparams({"lr": 1e-4, "model": {"size": "debug"}})
    log.close()
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/loss")] == [0.5]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed (pip install torchrl_dreamerv3[wandb])")
def test_wandb_offline_logger(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")  # restored afterwards (WandbLogger sets it globally)
    log = make_metric_logger("wandb", str(tmp_path), "run")
    log.log_scalars({"loss": 0.5}, step=1, prefix="train")
    log.log_hparams({"lr": 1e-4, "model": {"size": "debug"}})
    with pytest.warns(UserWarning, match="GIFs only") if importlib.util.find_spec("moviepy") is None else _null():
        gif = log.log_video("report/openl", torch.zeros(3, 3, 4, 4, dtype=torch.uint8), step=1)
    assert os.path.exists(gif)
    log.close()
    assert any(p.startswith("offline-run") for p in os.listdir(tmp_path / "wandb"))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_metric_mean_logs_the_mean_of_every_update_since_the_last_line():
    """What the reference's train_agg logs: the mean over the log interval, not the last update."""
    from tensordict import TensorDict

    from torchrl_dreamerv3.training.reporting.logging import MetricMean

    mean = MetricMean()
    assert mean.pop() == {} and mean.count == 0
    mean.add(TensorDict({"loss": torch.tensor(1.0), "actor": {"entropy": torch.tensor(0.5)}}, []))
    mean.add(TensorDict({"loss": torch.tensor(4.0), "actor": {"entropy": torch.tensor(0.25)}}, []))
    mean.add({"loss": torch.tensor(7.0, dtype=torch.float64)})  # a key missing: averaged over the updates it had
    assert mean.count == 3
    out = mean.pop()
    assert set(out) == {"loss", ("actor", "entropy")}
    assert out["loss"].item() == pytest.approx(4.0) and out["loss"].dtype == torch.float32
    assert out[("actor", "entropy")].item() == pytest.approx(0.375)
    assert mean.count == 0 and mean.pop() == {}  # popped: the next line starts over
    logged = MetricLogger(None).log_scalars(out, step=3, prefix="train")
    assert logged == {"train/loss": pytest.approx(4.0), "train/actor/entropy": pytest.approx(0.375)}
