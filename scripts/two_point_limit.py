"""What the low-dose frame itself allows: can *any* method tell a close pair from one rod?

Issue 10 asks a restorer to resolve every bead pair of the held-out forward model
(``heldout_forward_model.py``) from 1.2 Rayleigh distances.  A restoration is a
function of the low-dose frame, so its dip is a decision made from that frame, and no
decision can beat the ideal observer.  For every pair of the bead sets this script
compares, in the binned low-dose camera, the pair as rendered (two equal points) with
the single straight rod (a short filament piece; a point when its length is 0) along
the same axis whose image is closest (length and brightness fitted by weighted least
squares).  Both are noise-free expected images through the frame's own PSF, scale and
background; the noise is Poisson plus the four read noises of 2x2 digital binning.

``d'`` (detectability) is the noise-weighted distance between the two images.  By the
Neyman-Pearson lemma, any rule (a restorer's dip included) that calls a fraction
``P_D`` of such pairs "two" also calls at least ``Phi(z(P_D) - d')`` of the matching
rods "two": it splits rods that are not pairs.  The same numbers for the reference
camera (90 % of the light, unbinned) show what the ground truth can tell.  The rod is
one alternative; a richer family of single objects can only come closer, so the
false-split rates here are lower bounds.  No model is involved and nothing is tuned.

    python scripts/two_point_limit.py --split test --out two_point_limit.json \
        --plot two_point_limit.png --markdown
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

from pairscope._progress import progress
from pairscope.metrics import d_prime

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from heldout_forward_model import (  # noqa: E402
    HELD_OUT,
    LOW_CAMERA,
    REF_CAMERA,
    SPLIT_LOW,
    SPLIT_REF,
    Camera,
    ForwardModel,
    _splat,
    held_out_seeds,
)

PATCH = 160  # fine pixels (4 um), a multiple of oversample x binning
DETECTION = (0.5, 0.9, 0.97)  # fractions of pairs called "two"


class BeadFrame:
    """One bead frame's scene (``ForwardModel.scene``), rendered patch by patch."""

    def __init__(self, fm: ForwardModel, seed: int, peak: float) -> None:
        sc = fm.scene("beads", seed, peak)
        self.obj, self.pairs, self.scale, self.bg = sc.obj, sc.pairs, sc.scale, sc.bg
        self.truth = REF_CAMERA.expected_above_offset(
            SPLIT_REF * (sc.ref_grid * sc.scale + sc.bg / SPLIT_LOW / fm.binning**2)
        )
        self.fm = fm
        self.otf = fm.optics.psf_otf(PATCH, fm.fine_px, sc.defocus)

    def images(self, obj: np.ndarray, origin: tuple[int, int]) -> dict[str, np.ndarray]:
        """Expected photons of a fine-grid patch object (plus background) per camera."""
        o, b = self.fm.oversample, self.fm.binning
        img = np.fft.irfft2(np.fft.rfft2(obj) * self.otf, s=obj.shape)
        m = PATCH // o
        ref = np.maximum(img, 0).reshape(m, o, m, o).sum((1, 3)) * self.scale
        y0, x0 = origin[0] // o, origin[1] // o
        bg = self.bg[y0 : y0 + m, x0 : x0 + m] / SPLIT_LOW / b**2
        low = (SPLIT_LOW * (ref + bg)).reshape(m // b, b, m // b, b).sum((1, 3))
        return {"lowdose": low, "reference": SPLIT_REF * (ref + bg)}

    def weight(self, xy: np.ndarray) -> float:
        """A point's brightness: its bilinear splat summed (pairs are >= 9 px apart)."""
        x, y = (int(np.floor(v)) for v in xy)
        return float(self.obj[y - 1 : y + 3, x - 1 : x + 3].sum())

    def check(self, origin: tuple[int, int]) -> None:
        """The patch rendering of the frame's own object agrees with its truth.

        Compared on the patch's centre, where objects outside the patch add little.
        """
        o, m = self.fm.oversample, PATCH // self.fm.oversample
        oy, ox = origin
        mine = REF_CAMERA.expected_above_offset(
            self.images(self.obj[oy : oy + PATCH, ox : ox + PATCH], origin)["reference"]
        )
        truth = self.truth[oy // o : oy // o + m, ox // o : ox // o + m]
        c = slice(m // 4, 3 * m // 4)
        err = float(np.abs(mine - truth)[c, c].max() / truth[c, c].max())
        if err > 0.03:
            raise AssertionError(f"patch rendering differs from the frame by {err:.1%}")


def _rod(length: float, centre: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Points (x, y) of a uniform straight rod, fine pixels, quarter-pixel steps."""
    k = max(int(np.ceil(length * 4)), 1)
    t = (np.arange(k) + 0.5) / k - 0.5
    return centre + np.outer(t * length, direction)


def detectability(
    pair: np.ndarray, rod: np.ndarray, bg: np.ndarray, camera: Camera, reads: int
) -> float:
    """d' between two expected photon images, the rod's brightness fitted.

    Poisson and read noise in electrons (``reads`` pixels summed per output pixel);
    the background is known and shared by both hypotheses.
    """
    qe = camera.quantum_efficiency
    variance = qe * pair + reads * camera.read_noise_e**2
    return d_prime(qe * (pair - bg), qe * (rod - bg), variance)


def analyse_pair(frame: BeadFrame, p1: tuple, p2: tuple) -> dict:
    """d' of one pair against its closest rod, in the low-dose and reference camera."""
    fm, o = frame.fm, frame.fm.oversample
    a = (np.array(p1) + 0.5) * o - 0.5  # reference px -> fine px (x, y)
    c = (np.array(p2) + 0.5) * o - 0.5
    step, top = o * fm.binning, fm.size * o - PATCH
    mid = (a + c) / 2
    oy, ox = (
        int(np.clip(np.floor((v - PATCH / 2) / step) * step, 0, top))
        for v in (mid[1], mid[0])
    )
    shift = np.array([ox, oy], float)
    sep = float(np.linalg.norm(c - a))
    direction = (c - a) / sep
    bright = frame.weight(a)
    pair = frame.images(
        _splat(PATCH, np.stack([a, c]) - shift, np.full(2, bright)), (oy, ox)
    )
    zero = frame.images(np.zeros((PATCH, PATCH)), (oy, ox))
    frame.check((oy, ox))
    cameras = {"lowdose": (LOW_CAMERA, fm.binning**2), "reference": (REF_CAMERA, 1)}
    best = dict.fromkeys(cameras, (np.inf, 0.0))
    for length in np.linspace(0, 2.5 * sep, 51):
        pts = _rod(length, mid - shift, direction)
        rod = frame.images(
            _splat(PATCH, pts, np.full(len(pts), 2 * bright / len(pts))), (oy, ox)
        )
        for cam, (camera, reads) in cameras.items():
            d = detectability(pair[cam], rod[cam], zero[cam], camera, reads)
            if d < best[cam][0]:
                best[cam] = (d, float(length / sep))
    return {
        "lowdose_d": best["lowdose"][0],
        "reference_d": best["reference"][0],
        "rod_length_over_separation": best["lowdose"][1],
        "pair_peak_photons": float((pair["lowdose"] - zero["lowdose"]).max()),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--split", choices=("dev", "test"), default="test")
    p.add_argument("--frames", type=int, default=6, help="frames per bead set")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    p.add_argument("--plot", type=Path, default=None, help="PNG of d' per separation")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    fm = ForwardModel()
    rows: dict[str, dict[str, dict]] = {}
    for k, (family, peak) in enumerate(HELD_OUT):
        if family != "beads":
            continue
        per_sep: dict[float, list[dict]] = {}
        seeds = held_out_seeds(args.split, k, args.frames)
        for seed in progress(seeds, desc=f"beads@{peak}", leave=False):
            frame = BeadFrame(fm, seed, peak)
            for p1, p2, sep in frame.pairs:
                per_sep.setdefault(sep, []).append(analyse_pair(frame, p1, p2))
        rows[f"beads@{peak}"] = {
            str(sep): summarise(v) for sep, v in sorted(per_sep.items())
        }
    report = {"split": args.split, "frames": args.frames, "sets": rows}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.markdown:
        print(markdown(report))
    if args.plot:
        plot(report, args.plot)


def summarise(pairs: list[dict]) -> dict:
    """Median d' per camera and the least false-split rate at each detection rate."""
    d_low = np.array([q["lowdose_d"] for q in pairs])
    return {
        "pairs": len(pairs),
        "lowdose_d_median": float(np.median(d_low)),
        "reference_d_median": float(np.median([q["reference_d"] for q in pairs])),
        "rod_length_over_separation": float(
            np.median([q["rod_length_over_separation"] for q in pairs])
        ),
        "pair_peak_photons_median": float(
            np.median([q["pair_peak_photons"] for q in pairs])
        ),
        # Neyman-Pearson, per pair: P_FA = Phi(z(P_D) - d'), averaged over the pairs
        "rods_split_at_least": {
            str(pd): float(np.mean(norm.cdf(norm.ppf(pd) - d_low))) for pd in DETECTION
        },
    }


def markdown(report: dict) -> str:
    head = (
        "| set, separation (R) | pair peak (photons) | d' low-dose | d' reference "
        "| closest rod (× separation) | "
        + " | ".join(f"rods split if {pd:.0%} of pairs are" for pd in DETECTION)
        + " |"
    )
    lines = [head, "|" + "---|" * (5 + len(DETECTION))]
    for name, per_sep in report["sets"].items():
        for sep, r in per_sep.items():
            split = " | ".join(
                f"{r['rods_split_at_least'][str(pd)]:.0%}" for pd in DETECTION
            )
            lines.append(
                f"| {name}, {sep} | {r['pair_peak_photons_median']:.0f} "
                f"| {r['lowdose_d_median']:.1f} | {r['reference_d_median']:.1f} "
                f"| {r['rod_length_over_separation']:.2f} | {split} |"
            )
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """d' per separation, both cameras, and the least false-split rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, per_sep in report["sets"].items():
        seps = [float(s) for s in per_sep]
        line = ax1.plot(seps, [r["lowdose_d_median"] for r in per_sep.values()],
                        "o-", label=f"{name}, low-dose")[0]  # fmt: skip
        ax1.plot(seps, [r["reference_d_median"] for r in per_sep.values()], "s--",
                 color=line.get_color(), label=f"{name}, reference")  # fmt: skip
        for pd, style in zip(DETECTION, (":", "-.", "-"), strict=True):
            ax2.plot(seps, [r["rods_split_at_least"][str(pd)] for r in per_sep.values()],
                     style, color=line.get_color(),
                     label=f"{name}, {pd:.0%} of pairs resolved")  # fmt: skip
    ax1.set_yscale("log")
    ax1.set_xlabel("separation (Rayleigh distances)")
    ax1.set_ylabel("d', pair vs closest rod (median)")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("separation (Rayleigh distances)")
    ax2.set_ylabel("rods split, at least (Neyman-Pearson)")
    ax2.legend(fontsize=7)
    fig.suptitle(f"what the low-dose frame allows ({report['split']} split)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
