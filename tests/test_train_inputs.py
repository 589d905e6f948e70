"""`pairscope train`: what the model file records, and every bad input refused.

Each bad input is a real file (a real checkpoint cut short, a pickle, a model with
NaN weights, ...) fed to the real CLI: one line on stderr, exit code 2, no
traceback, and no existing file changed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pairscope.cli import main
from pairscope.io import open_run
from pairscope.io.calibration import Registration, save_calibration
from pairscope.restore import (
    ModelInfo,
    UNet,
    default_preview_network,
    describe_model_file,
    load_model,
    save_model,
)
from pairscope.train import (
    USE_WIDTH,
    NoiseModel,
    TrainConfig,
    TrainingError,
    checkpoint_path,
    train,
)

TINY = ["--width", "4", "--depth", "1", "--crop", "64", "--batch-size", "4",
        "--samples-per-epoch", "8", "--block-size", "2", "--no-progress",
        "--no-noise-fit", "--sequential-pairs"]  # fmt: skip
# (the shared demo run's pairs are of one instant only when the machine is idle)


@pytest.fixture(scope="module")
def run(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = shutil.copytree(demo_run, tmp_path_factory.mktemp("inputs") / "run")
    save_calibration(path, Registration(-0.7, 1.3))  # the demo rig's true shift
    return Path(path)


@pytest.fixture(scope="module")
def trained(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model (and its checkpoint) trained by the CLI, 3 epochs, noise fit on."""
    out = tmp_path_factory.mktemp("trained") / "m.safetensors"
    args = [a for a in TINY if a != "--no-noise-fit"]
    assert main(["train", str(run), "--out", str(out), "--epochs", "3", *args]) == 0
    return out


def test_the_model_file_says_everything(trained: Path) -> None:
    info = load_model(trained).info
    config = TrainConfig.from_model_info(info.training)
    assert config is not None and config.version == 1
    assert (config.width, config.depth, config.epochs, config.crop) == (4, 1, 3, 64)
    assert info.training == config.model_dump(mode="json")
    # the demo rig's declared photometry (never Gain): 100 ADU, 0.5 e-/ADU, 1.6 e-
    cam = info.lowdose_camera
    assert cam is not None and cam.camera == "LowDoseCam"
    assert (cam.offset_adu, cam.gain_e_per_adu, cam.read_noise_e) == (100, 0.5, 1.6)
    assert info.reference_camera is not None
    assert info.reference_camera.camera == "ReferenceCam"
    val = info.validation
    assert val is not None and val.selected == "best"
    losses = [h["val_loss"] for h in info.history]
    assert val.epoch == 1 + losses.index(min(losses))
    assert val.val_loss == min(losses) == info.metrics["val_loss"]
    assert val.psnr_db is not None and val.bicubic_psnr_db is not None
    assert val.n_pairs > 0 and val.n_train_pairs > val.n_pairs
    text = describe_model_file(trained)
    for piece in ("LowDoseCam: offset 100.0 ADU, gain 0.5 e-/ADU, read noise 1.6 e-",
                  f"best epoch {val.epoch}", "width=4",
                  "vs bicubic"):  # fmt: skip
        assert piece in text, piece


def test_use_sets_the_capacity_and_width_overrides_it(
    run: Path, tmp_path: Path
) -> None:
    """``--use offline`` trains the wider network (from options and from a config
    file alike), records what the model is for, and ``--width`` still wins."""
    assert TINY[:2] == ["--width", "4"]
    small = TINY[2:]
    config = tmp_path / "train.json"
    config.write_text('{"use": "offline", "epochs": 1}')
    for i, (extra, width, use) in enumerate(
        (
            ([], USE_WIDTH["preview"], "preview"),
            (["--use", "offline"], USE_WIDTH["offline"], "offline"),
            (["--config", str(config)], USE_WIDTH["offline"], "offline"),
            (["--use", "offline", "--width", "4"], 4, "offline"),
        )
    ):
        out = tmp_path / f"m{i}.safetensors"
        args = ["train", str(run), "--out", str(out), "--epochs", "1", *small, *extra]
        assert main(args) == 0, extra
        loaded = load_model(out)
        assert loaded.network.width == width, extra
        assert loaded.info.training["use"] == use, extra
        assert TrainConfig.from_model_info(loaded.info.training) is not None
    # one fact in two places: the preview use trains the live preview's network
    assert USE_WIDTH["preview"] == default_preview_network().width
    assert USE_WIDTH["offline"] > USE_WIDTH["preview"]


def test_independent_frames_use_every_pair(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    cfg = TrainConfig(width=4, depth=1, crop=64, batch_size=4, samples_per_epoch=8,
                      epochs=1, progress=False, noise_fit=False, val_fraction=0.25,
                      independent_frames=True, sequential_pairs=True)  # fmt: skip
    val = train([run], out, cfg).info.validation  # type: ignore[union-attr]
    assert val is not None
    usable = open_run(run).with_reference()  # complete pairs
    n_val = max(1, round(0.25 * len(usable)))
    assert (val.n_train_pairs, val.n_pairs) == (len(usable) - n_val, n_val)
    blocked = cfg.replace(independent_frames=False, block_size=2, force=True)
    val2 = train([run], out, blocked).info.validation  # type: ignore[union-attr]
    assert val2 is not None and val2.n_train_pairs + val2.n_pairs < len(usable)


# -- bad input: (prepare files in tmp -> extra CLI args, expected message) ---------


def _ckpt_copy(trained: Path, tmp: Path) -> Path:
    out = tmp / "m.safetensors"
    shutil.copy(checkpoint_path(trained), checkpoint_path(out))
    return out


def _truncated(trained: Path, tmp: Path) -> list[str]:
    out = _ckpt_copy(trained, tmp)
    ckpt = checkpoint_path(out)
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    return ["--out", str(out), "--resume", "--epochs", "3"]


def _pickle(trained: Path, tmp: Path) -> list[str]:
    out = tmp / "m.safetensors"
    torch.save(UNet(factor=2, width=4, depth=1), checkpoint_path(out))  # a module
    return ["--out", str(out), "--resume", "--epochs", "3"]


def _bare_pickle(trained: Path, tmp: Path) -> list[str]:
    import pickle

    out = tmp / "m.safetensors"
    checkpoint_path(out).write_bytes(pickle.dumps({"model": print}))
    return ["--out", str(out), "--resume", "--epochs", "3"]


def _mismatched(trained: Path, tmp: Path) -> list[str]:
    out = _ckpt_copy(trained, tmp)
    return ["--out", str(out), "--resume", "--epochs", "3", "--width", "8"]


def _other_use(trained: Path, tmp: Path) -> list[str]:
    """The checkpoint's network is width 4; ``--use offline`` with no width (none:
    by use) asks for 24."""
    out = _ckpt_copy(trained, tmp)
    use = ["--use", "offline", "--width", "none"]
    return ["--out", str(out), "--resume", "--epochs", "3", *use]


def _nan_init(trained: Path, tmp: Path) -> list[str]:
    net = load_model(trained).network
    with torch.no_grad():
        net.head.weight.fill_(float("nan"))
    nan = tmp / "nan.safetensors"
    data = nan.with_suffix(".tmp")
    # write with safetensors directly: save_model itself refuses NaN weights
    from safetensors.torch import save_file

    info = ModelInfo.for_network(net, name="nan")
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()},
        data,
        metadata={"pairscope": info.model_dump_json()},
    )
    data.rename(nan)
    return ["--out", str(tmp / "new.safetensors"), "--init", str(nan)]


def _existing_out(trained: Path, tmp: Path) -> list[str]:
    out = tmp / "m.safetensors"
    shutil.copy(trained, out)
    return ["--out", str(out)]


def _existing_ckpt(trained: Path, tmp: Path) -> list[str]:
    return ["--out", str(_ckpt_copy(trained, tmp))]


BAD: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "resume-missing": (
        lambda t, d: ["--out", str(d / "m.safetensors"), "--resume"],
        r"--resume: there is no checkpoint .*m\.ckpt to continue",
    ),
    "resume-truncated": (_truncated, r"m\.ckpt: truncated or corrupt checkpoint"),
    "resume-pickle": (_pickle, r"m\.ckpt: holds Python objects that pairscope never"),
    "resume-bare-pickle": (_bare_pickle, r"m\.ckpt: a pickle file, which pairscope"),
    "resume-mismatched": (
        _mismatched,
        r"written for another training \(width=4 \(now 8\)\): resume with the same",
    ),
    "resume-other-use": (
        _other_use,
        r"written for another training \(width=4 \(now 24\)\): resume with the",
    ),
    "init-nan": (_nan_init, r"nan\.safetensors: weights are not finite"),
    "out-exists": (_existing_out, r"m\.safetensors exists: pass --force"),
    "ckpt-exists": (_existing_ckpt, r"m\.ckpt holds an interrupted training"),
    "too-few-pairs": (
        lambda t, d: ["--out", str(d / "m.safetensors"), "--block-size", "6"],
        r"\d+ pairs are too few .* blocks of 6 triggers: pass --independent-frames",
    ),
    "crop-too-large": (
        lambda t, d: ["--out", str(d / "m.safetensors"), "--crop", "512"],
        r"--crop 512 does not fit frames of 256x256 reference pixels",
    ),
    "bad-value": (
        lambda t, d: ["--out", str(d / "m.safetensors"), "--epochs", "0"],
        r"--epochs: Input should be greater than or equal to 1 \(got 0\)",
    ),
    "jitter-without-synthetic": (
        lambda t, d: [
            "--out",
            str(d / "m.safetensors"),
            "--synthetic-fraction",
            "0",
            "--dose-jitter",
            "0.5",
        ],
        r"dose_jitter 0.5 acts on synthetic crops only",
    ),
    "mix-without-synthetic": (
        lambda t, d: [
            "--out",
            str(d / "m.safetensors"),
            "--synthetic-fraction",
            "0",
            "--specimen-mix",
            "0.5",
        ],
        r"specimen_mix 0.5 acts on synthetic crops only",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_training_input_is_one_line_and_overwrites_nothing(
    case: str,
    run: Path,
    trained: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prepare, message = BAD[case]
    extra = prepare(trained, tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    capsys.readouterr()
    rc = main(["train", str(run), *TINY, "--epochs", "1", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("pairscope: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    import re

    assert re.search(message, err), err
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_force_overwrites_and_resume_finishes(
    run: Path, trained: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.safetensors"
    shutil.copy(trained, out)
    assert main(["train", str(run), *TINY, "--epochs", "1", "--out", str(out),
                 "--force", "--name", "again"]) == 0  # fmt: skip
    assert load_model(out).info.name == "again"
    # a finished checkpoint resumes to the same epochs without training more
    res = train([run], out, TrainConfig.from_model_info(load_model(out).info.training)
                .replace(resume=True, force=True))  # fmt: skip
    assert [h["epoch"] for h in res.history] == [1]


def test_save_refuses_nan_from_training_code(tmp_path: Path) -> None:
    net = UNet(factor=2, width=4, depth=1)
    with torch.no_grad():
        net.head.bias.fill_(float("inf"))
    with pytest.raises(ValueError, match="not finite"):
        save_model(
            tmp_path / "x.safetensors", net, ModelInfo.for_network(net, name="x")
        )


def test_the_noise_model_is_stored(run: Path, tmp_path: Path) -> None:
    noise = NoiseModel(gain_e_per_adu=0.49, offset_adu=99.5, read_noise_e=1.7,
                       n_points=1000, dose_ratio=0.04,
                       reference_gain_e_per_adu=0.5)  # fmt: skip
    cfg = TrainConfig(width=4, depth=1, crop=64, batch_size=4, samples_per_epoch=8,
                      epochs=1, progress=False, block_size=2,
                      sequential_pairs=True)  # fmt: skip
    train([run], tmp_path / "m.safetensors", cfg, noise=noise)
    fit = load_model(tmp_path / "m.safetensors").info.noise_fit
    assert fit is not None
    assert (fit.gain_e_per_adu, fit.offset_adu, fit.read_noise_e) == (0.49, 99.5, 1.7)
    assert (fit.dose_ratio, fit.reference_offset_adu) == (0.04, None)  # nan -> None
    text = describe_model_file(tmp_path / "m.safetensors")
    assert "noise fit:    gain 0.49 e-/ADU, offset 99.50 ADU, read noise 1.7 e-" in text
    # no reference offset: the camera cannot be simulated, so the default synthetic
    # crops are left out, and the model file says so; asked for, they are refused
    training = load_model(tmp_path / "m.safetensors").info.training
    assert training is not None
    assert (training["synthetic_fraction"], training["dose_jitter"]) == (0.0, 0.0)
    with pytest.raises(TrainingError, match="synthetic crops need the camera noise"):
        train([run], tmp_path / "s.safetensors",
              cfg.replace(synthetic_fraction=0.3), noise=noise)  # fmt: skip
    assert not (tmp_path / "s.safetensors").exists()


def test_cli_options_are_the_config_fields(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, field in TrainConfig.model_fields.items():
        if name == "version":
            continue
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
        default = field.get_default()
        assert f"(default: {'none' if default is None else default})" in text
    # a config file, overridden by an option; the result is what the model stores
    cfg = tmp_path / "train.yaml"
    cfg.write_text("width: 4\ndepth: 1\ncrop: 64\nepochs: 3\nloss: l1_fft\n")
    out = tmp_path / "m.safetensors"
    args = ["train", str(run), "--out", str(out), "--config", str(cfg), "--epochs",
            "1", "--samples-per-epoch", "8", "--batch-size", "4", "--block-size", "2",
            "--no-progress", "--no-noise-fit", "--minutes", "none"]  # fmt: skip
    assert main(args) == 0
    stored = TrainConfig.from_model_info(load_model(out).info.training)
    assert stored is not None
    assert (stored.width, stored.loss, stored.epochs) == (4, "l1_fft", 1)
    assert stored.minutes is None  # "none" unsets an optional option


def test_sequential_pairs_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One core, two cameras: pairs taken one after the other, not at one instant."""
    import useq

    from pairscope.acquire import PairedAcquisition
    from pairscope.hardware import demo_config_path, open_core
    from pairscope.io import RunWriter

    with open_core(demo_config_path()) as core:
        for cam in ("LowDoseCam", "ReferenceCam"):
            core.setProperty(cam, "SensorSize", 128)
        summary = PairedAcquisition(core, config_path=demo_config_path()).run(
            useq.MDASequence(time_plan={"interval": 0, "loops": 6}),
            writer=RunWriter(tmp_path / "runs"),
        )
    run = Path(summary.run_dir)  # type: ignore[arg-type]
    records = open_run(run).records
    assert records and all(r.get("simultaneous") is False for r in records)
    tiny = [a for a in TINY if a != "--sequential-pairs"]
    args = ["train", str(run), "--out", str(tmp_path / "m.safetensors"), *tiny,
            "--epochs", "1", "--independent-frames"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "0 pair(s) to train on" in err and "pass --sequential-pairs" in err
    assert main([*args, "--sequential-pairs"]) == 0
    assert load_model(tmp_path / "m.safetensors").info.training["sequential_pairs"]


def test_the_measured_psf_is_stored_and_shown(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Point emitters are on by default: the PSF measured on the demo run's
    references is the demo optics' (Gaussian sigma ~0.21 lambda/NA: 0.52 um / 1.2)."""
    info = load_model(trained).info
    assert info.training is not None and info.training["point_emitters"] == 1.0
    psf = info.psf_fit
    assert psf is not None and psf.n_spots >= 8
    assert info.reference_pixel_size_um is not None
    expected_px = 0.21 * 0.52 / 1.2 / info.reference_pixel_size_um
    assert psf.sigma_px == pytest.approx(expected_px, rel=0.15)
    assert main(["info", str(trained)]) == 0
    assert (
        f"PSF fit:      sigma {psf.sigma_px:.3g} reference px"
        in capsys.readouterr().out
    )


def test_the_psf_width_given_by_the_optics_is_used_and_shown(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--psf-sigma replaces the measured width (the spots still give the points'
    brightness); with neither point emitters nor textured objects it is refused,
    naming the options."""
    out = tmp_path / "m.safetensors"
    args = ["train", str(run), "--out", str(out), "--epochs", "1",
            *[a for a in TINY if a != "--no-noise-fit"]]  # fmt: skip
    assert main([*args, "--psf-sigma", "0.8"]) == 0
    psf = load_model(out).info.psf_fit
    assert psf is not None and psf.sigma_given and psf.sigma_px == 0.8
    assert psf.n_spots >= 8 and psf.peak_adu > 0
    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "sigma 0.8 reference px" in shown and "given (--psf-sigma)" in shown
    bad = tmp_path / "bad.safetensors"
    args[3] = str(bad)
    off = ["--point-emitters", "0", "--textured-objects", "0"]
    assert main([*args, "--psf-sigma", "0.8", *off]) == 2
    err = capsys.readouterr().err
    assert "psf_sigma" in err and "point_emitters > 0 or textured_objects > 0" in err
    assert not bad.exists()


def test_without_isolated_spots_psf_structure_is_left_out_or_refused(
    tmp_path: Path,
) -> None:
    """References with no point-like spot (broad blobs) give no PSF: the default
    point emitters and textured objects are left out (and the model file says so);
    asked for, refused."""
    import numpy as np
    import tifffile
    from scipy.ndimage import gaussian_filter

    from pairscope.io._import import import_pairs

    rng = np.random.default_rng(0)
    refs = []
    for _ in range(10):
        blobs = gaussian_filter((rng.random((128, 128)) > 0.995).astype(float), 12)
        refs.append(100 + rng.poisson(50 + 4000 * blobs / blobs.max()))
    ref = np.stack(refs).astype(np.uint16)
    low_e = ref.astype(float).reshape(10, 64, 2, 64, 2).sum((2, 4)) - 400
    low = (100 + rng.poisson(np.maximum(low_e, 0) * 0.1)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "low.tif", low)
    tifffile.imwrite(tmp_path / "ref.tif", ref)
    run = import_pairs(tmp_path / "low.tif", tmp_path / "ref.tif", tmp_path / "runs",
                       reference_pixel_um=0.1, binning=2, offset=100, gain=1.0,
                       progress=False)  # fmt: skip
    noise = NoiseModel(gain_e_per_adu=1.0, offset_adu=100, read_noise_e=1.0,
                       dose_ratio=0.1, reference_gain_e_per_adu=1.0,
                       reference_offset_adu=100)  # fmt: skip
    cfg = TrainConfig(width=4, depth=1, crop=64, batch_size=4, samples_per_epoch=8,
                      epochs=1, progress=False, block_size=2)  # fmt: skip
    train([run], tmp_path / "m.safetensors", cfg, noise=noise)
    info = load_model(tmp_path / "m.safetensors").info
    assert info.training is not None and info.training["point_emitters"] == 0.0
    assert info.training["textured_objects"] == 0.0
    assert info.training["synthetic_fraction"] == 0.3 and info.psf_fit is None
    for asked in ({"point_emitters": 1.0}, {"textured_objects": 0.5}):
        with pytest.raises(TrainingError, match="textured objects need the PSF"):
            train([run], tmp_path / "p.safetensors", cfg.replace(**asked),
                  noise=noise)  # fmt: skip
        assert not (tmp_path / "p.safetensors").exists()
