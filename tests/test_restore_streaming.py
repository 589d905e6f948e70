"""The streaming restorer: bursts caught up within a bound, errors survive, hot swap,
tiling."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pairscope.restore import (
    LoadedModel,
    ModelFileError,
    ModelInfo,
    Normalization,
    RestoredFrame,
    StreamingRestorer,
    UNet,
    loaded_from_network,
)

WAIT_S = 60.0  # generous: fails only on a hang


class HeldUNet(UNet):
    """A U-Net whose forward waits until released, so frames arrive while it
    restores, however fast or busy the CPU is (class-level events: the restorer
    works on a copy of the network)."""

    entered = threading.Event()
    release = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).entered.set()
        assert type(self).release.wait(WAIT_S), "never released"
        return super().forward(x)


class FailingUNet(UNet):
    """A U-Net whose third call raises ``exc``."""

    exc: BaseException = RuntimeError("boom")

    def __init__(self, **kw: int) -> None:
        super().__init__(**kw)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 3:
            raise self.exc
        return super().forward(x)


def _model(net: UNet | None = None, name: str = "m", **kw: object) -> LoadedModel:
    net = net if net is not None else UNet(factor=2, width=4, depth=1)
    return loaded_from_network(net, ModelInfo.for_network(net, name=name, **kw))


def _wait(cond: Callable[[], bool], timeout: float = WAIT_S) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def _idle(r: StreamingRestorer) -> bool:
    s = r.stats()
    return s.restored + s.skipped + s.errors == s.received


def _frame(i: int = 0, shape: tuple[int, int] = (32, 32)) -> np.ndarray:
    return np.random.default_rng(i).random(shape, dtype=np.float32)


def _held_burst(r: StreamingRestorer, n: int, before_release: float = 0.0) -> None:
    """Frame 0 is held in the network while frames 1..n-1 arrive; released after
    ``before_release`` seconds."""
    HeldUNet.entered.clear()
    HeldUNet.release.clear()
    r.submit(0, _frame(0))
    assert HeldUNet.entered.wait(WAIT_S)  # frame 0 is being restored
    for i in range(1, n):
        r.submit(i, _frame(i))
    time.sleep(before_release)
    HeldUNet.release.set()
    _wait(lambda: _idle(r))


def test_a_burst_is_restored_whole_in_order() -> None:
    """Frames that come at once (the pairer's first pairs) while the worker is
    busy are all restored, oldest first: every pair gets its restoration."""
    got: list[RestoredFrame] = []
    model = _model(HeldUNet(factor=2, width=4, depth=1))
    r = StreamingRestorer(model, num_threads=0, max_wait_s=WAIT_S)
    r.events.restored.connect(got.append)
    with r:
        _held_burst(r, 8)
    s = r.stats()
    assert (s.received, s.restored, s.skipped) == (8, 8, 0)
    assert [f.index for f in got] == list(range(8))
    assert got[-1].image.shape == (64, 64)
    assert got[-1].image.dtype == np.float32
    assert s.latency_p50_ms > 0
    assert s.device == "cpu"


def test_it_never_falls_behind_more_than_its_backlog() -> None:
    """Beyond ``backlog`` waiting frames the oldest are pushed out (skipped)."""
    got: list[RestoredFrame] = []
    model = _model(HeldUNet(factor=2, width=4, depth=1))
    r = StreamingRestorer(model, num_threads=0, backlog=8, max_wait_s=WAIT_S)
    r.events.restored.connect(got.append)
    with r:
        _held_burst(r, 60)  # 59 arrive while frame 0 is held: the newest 8 wait
    s = r.stats()
    assert (s.received, s.restored, s.skipped) == (60, 9, 51)
    assert [f.index for f in got] == [0, *range(52, 60)]


def test_frames_that_waited_too_long_are_passed_over_for_the_newest() -> None:
    """A frame that waited longer than ``max_wait_s`` is skipped unless it is the
    newest, so the preview never lags far (``max_wait_s=0``: the newest wins)."""
    got: list[RestoredFrame] = []
    model = _model(HeldUNet(factor=2, width=4, depth=1))
    r = StreamingRestorer(model, num_threads=0, max_wait_s=0.05)
    r.events.restored.connect(got.append)
    with r:
        _held_burst(r, 6, before_release=0.3)  # 5 wait longer than 0.05 s
    s = r.stats()
    assert (s.received, s.restored, s.skipped) == (6, 2, 4)
    assert [f.index for f in got] == [0, 5]


@pytest.mark.parametrize("finish_waiting", [False, True])
def test_stop_drops_or_finishes_the_waiting_frame(finish_waiting: bool) -> None:
    """A run's last frame waits while the one before is restored: ``stop`` drops
    it, or restores it first when asked (the live session asks: the last pair
    gets its restoration and its trust check)."""
    got: list[RestoredFrame] = []
    HeldUNet.entered.clear()
    HeldUNet.release.clear()
    r = StreamingRestorer(_model(HeldUNet(factor=2, width=4, depth=1)), num_threads=0)
    r.events.restored.connect(got.append)
    r.start()
    r.submit(0, _frame(0))
    assert HeldUNet.entered.wait(WAIT_S)  # frame 0 is being restored
    r.submit(1, _frame(1))  # the last frame waits
    stopper = threading.Thread(target=r.stop, kwargs={"finish_waiting": finish_waiting})
    stopper.start()
    _wait(lambda: r._stop)  # the stop is asked while frame 0 is still restored
    HeldUNet.release.set()
    stopper.join(WAIT_S)
    assert not stopper.is_alive()
    assert [f.index for f in got] == ([0, 1] if finish_waiting else [0])


@pytest.mark.parametrize(
    "exc", [RuntimeError("boom"), torch.OutOfMemoryError("CUDA out of memory")]
)
def test_errors_are_reported_and_restoring_continues(exc: BaseException) -> None:
    net = FailingUNet(factor=2, width=4, depth=1)
    net.exc = exc
    errors: list[str] = []
    got: list[int] = []
    r = StreamingRestorer(_model(net), num_threads=0)
    r.events.error.connect(errors.append)
    r.events.restored.connect(lambda f: got.append(f.index))
    with r:
        for i in range(5):
            r.submit(i, _frame(i))
            _wait(lambda: _idle(r))
    assert r.stats().errors == 1
    assert got == [0, 1, 3, 4]
    assert len(errors) == 1
    assert "frame 2" in errors[0]
    if isinstance(exc, torch.OutOfMemoryError):
        assert "out of memory" in errors[0]
        assert "tile=" in errors[0]


def test_listener_errors_and_bad_frames_are_not_fatal() -> None:
    got: list[int] = []

    def bad_listener(frame: RestoredFrame) -> None:
        raise ValueError("listener bug")

    r = StreamingRestorer(_model(), num_threads=0)
    r.events.restored.connect(bad_listener)
    r.events.restored.connect(lambda f: got.append(f.index))
    with r:
        r.submit(0, np.zeros((2, 3, 4)))  # not 2-D: an error, not a crash
        _wait(lambda: _idle(r))
        r.submit(1, _frame())
        _wait(lambda: _idle(r))
    s = r.stats()
    assert (s.errors, s.restored) == (1, 1)


def test_hot_swap_while_submitting() -> None:
    swapped: list[str] = []
    names: list[str] = []
    r = StreamingRestorer(_model(name="first"), num_threads=0)
    r.events.model_swapped.connect(swapped.append)
    r.events.restored.connect(lambda f: names.append(f.model_name))
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            r.submit(i, _frame(i))
            i += 1
            time.sleep(0.002)

    with r:
        producer = threading.Thread(target=produce)
        producer.start()
        _wait(lambda: "first" in names)
        r.swap_model(_model(name="second"))
        _wait(lambda: names.count("second") >= 3)
        stop.set()
        producer.join()
    assert swapped == ["second"]
    first_second = names.index("second")
    assert set(names[:first_second]) == {"first"}
    assert set(names[first_second:]) == {"second"}
    assert r.stats().model_name == "second"


def test_swap_refuses_other_factor() -> None:
    r = StreamingRestorer(_model(), num_threads=0)
    with pytest.raises(ModelFileError, match="restores ×4 but the acquisition bins ×2"):
        r.swap_model(_model(UNet(factor=4, width=4, depth=1)))


def test_normalisation_units() -> None:
    model = _model(
        input_norm=Normalization(low=100, high=1100),
        target_norm=Normalization(low=200, high=2200),
    )
    r = StreamingRestorer(model, num_threads=0)
    out = r.restore_now(np.full((10, 12), 600, np.uint16))
    # untrained network = interpolation: (600-100)/1000 * 2000 + 200
    np.testing.assert_allclose(out, 1200, rtol=1e-5)
    assert out.shape == (20, 24)
    assert out.dtype == np.float32


def test_tiled_equals_untiled() -> None:
    torch.manual_seed(1)
    net = UNet(factor=2, width=4, depth=2)
    torch.nn.init.normal_(net.head.weight, std=0.3)
    model = _model(net)
    frame = _frame(3, (150, 171)) * 1000
    whole = StreamingRestorer(model, num_threads=0).restore_now(frame)
    tiled = StreamingRestorer(model, tile=96, overlap=64, num_threads=0).restore_now(
        frame
    )
    assert tiled.shape == whole.shape == (300, 342)
    np.testing.assert_allclose(tiled, whole, atol=1e-3 * np.ptp(whole))
    interp = F.interpolate(torch.from_numpy(frame)[None, None], scale_factor=2)
    assert not np.allclose(whole, interp[0, 0].numpy(), atol=1)  # net is non-trivial


def test_submit_never_raises_and_counts_replacements() -> None:
    r = StreamingRestorer(_model(), num_threads=0, backlog=2)  # not started: wait
    for i in range(3):
        r.submit(i, _frame(i))
    s = r.stats()
    assert (s.received, s.skipped, s.restored) == (3, 1, 0)
    assert np.isnan(s.latency_p50_ms)


def test_self_ensemble_is_the_mean_of_the_eight_views_and_equivariant() -> None:
    torch.manual_seed(0)
    net = UNet(factor=2, width=4, depth=1)
    torch.nn.init.normal_(net.head.weight, std=0.1)  # not equivariant by itself
    model = _model(net)
    frame = _frame(3, (24, 40))  # not square: quarter turns change the shape
    single = StreamingRestorer(model, device="cpu")
    ensemble = StreamingRestorer(model, device="cpu", self_ensemble=True)
    views = []
    for flip in (False, True):
        f = frame[:, ::-1] if flip else frame
        for k in range(4):
            y = np.rot90(single.restore_now(np.ascontiguousarray(np.rot90(f, k))), -k)
            views.append(y[:, ::-1] if flip else y)
    out = ensemble.restore_now(frame)
    assert out.shape == (48, 80)
    np.testing.assert_allclose(out, np.mean(views, 0), atol=1e-5)
    assert np.abs(out - single.restore_now(frame)).max() > 1e-3  # the views differ
    for view in (np.rot90(frame), frame[::-1]):  # the ensemble turns with the frame
        expect = np.rot90(out) if view.shape != frame.shape else out[::-1]
        np.testing.assert_allclose(
            ensemble.restore_now(np.ascontiguousarray(view)), expect, atol=1e-5
        )
