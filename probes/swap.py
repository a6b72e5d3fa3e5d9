"""The swap checks' engine: counterfactual composites of two test images, predicted by the
audited model.

The checks themselves are ``probes.checks.intervention_surround_swap`` (the lungs of one
image inside the surround of another) and ``probes.checks.intervention_border_swap`` (the
outer band of one image around the interior of another). Both:

1. call every usable test image with the audited model on the decision that matters, the
   target class (``probes.target_class``) against the rest (``target_calls``, through the
   same cached ``predict_images`` service as the composites);
2. draw pairs of images whose calls differ (``draw_pairs``), deterministically from the
   run's seed, at most ``probes.swap_pairs`` of them, half in each direction, each image
   the *base* of at most one pair of a kind so the pairs share as few images as a test
   set allows;
3. build each pair's composite: the base image with a region filled from the donor at the
   same place, the region's edge feathered by a Gaussian of ``FEATHER_FRACTION`` of the
   side so no hard seam is left for the model to read (``composites``);
4. predict the composites through the pipeline's cached ``predict_images`` service: the
   composite's call equals either the base's or the donor's, since the pair's calls differ.

What the composites show is the model's decision under an intervention, not where its
gradients point: causal evidence (DeGrave et al. 2021) where saliency is not (Adebayo et
al. 2022).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.ndimage import gaussian_filter

from probes.base import ProbeContext, class_word
from probes.stats import wilson_ci

if TYPE_CHECKING:
    from audit.data.dataset import Dataset

FEATHER_FRACTION = 0.01  # Gaussian sigma of a region's edge, share of the side (2 px at 224)
GALLERY_PAIRS = 4  # composites shown, half following the base and half the donor if there are


@dataclass(frozen=True)
class Pairs:
    """Drawn pairs, as positions into the called rows, with their composites' calls."""

    base: np.ndarray
    donor: np.ndarray
    relation: np.ndarray  # "within" (same source) or "across"
    base_called: np.ndarray  # the base image's target call
    composite_called: np.ndarray  # the composite's target call
    images: np.ndarray  # the composites, uint8 (n, S, S)

    @property
    def follows_base(self) -> np.ndarray:
        """Whether each composite's call is its base's (else, the calls differing, its
        donor's)."""
        return self.composite_called == self.base_called


def target_calls(context: ProbeContext, rows: np.ndarray) -> np.ndarray:
    """Whether the audited model calls each of ``rows`` the target class (argmax).

    Predicted through the cached ``predict_images`` service, as the composites are, so the
    two swap checks share one prediction of the test images.
    """
    images = context.dataset.images[rows]
    return _called(context, context.predict_images(context.audited, images,
                                                   _masks(context.dataset, rows)))


def _masks(dataset: Dataset, rows: np.ndarray) -> np.ndarray | None:
    """The lung masks of ``rows``, or None where the data set has none."""
    return None if dataset.masks is None else np.asarray(dataset.masks[rows])


def _called(context: ProbeContext, probabilities: np.ndarray) -> np.ndarray:
    """Whether each row of the audited model's ``probabilities`` calls the target class."""
    target = list(context.models[context.audited].classes).index(context.params.target_class)
    return probabilities.argmax(axis=1) == target


def draw_pairs(called: np.ndarray, sources: np.ndarray, relation: str, n_pairs: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n_pairs`` (base, donor) position pairs whose calls differ, half of them with
    a base called the target class and half with a base called otherwise.

    The halves are equal because a composite's outcome depends on the direction of the
    swap (target lungs in another surround or the reverse): with the same mix in every
    relation, shares of different relations compare. Bases are drawn at random among
    those that have a donor of the other call from the same source (``relation=
    "within"``), another source (``"across"``) or any source (``"any"``), each used once;
    each gets a random such donor.

    Returns:
        ``(base, donor)`` int arrays of equal length (possibly 0).
    """
    if relation not in ("within", "across", "any"):
        raise ValueError(f"relation must be 'within', 'across' or 'any'; got {relation!r}")
    same = sources[:, None] == sources[None, :]
    eligible = called[:, None] != called[None, :]
    if relation != "any":
        eligible &= same if relation == "within" else ~same
    has_donor = eligible.any(axis=1)
    sides = [rng.permutation(np.flatnonzero(has_donor & (called == call)))
             for call in (True, False)]
    per_side = min(n_pairs // 2, *(len(side) for side in sides))
    base = np.concatenate([side[:per_side] for side in sides]).astype(int)
    donor = np.array([rng.choice(np.flatnonzero(eligible[position])) for position in base],
                     dtype=int)
    return base, donor


def composites(base: np.ndarray, donor: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """``base`` images with ``regions`` filled from ``donor`` at the same place, feathered.

    Args:
        base: uint8 ``(n, S, S)``.
        donor: uint8 ``(n, S, S)``.
        regions: ``(n, S, S)`` or ``(S, S)``, nonzero inside the region taken from ``donor``.

    Returns:
        uint8 ``(n, S, S)``: ``base * (1 - w) + donor * w`` with ``w`` the region blurred by
        a Gaussian of ``FEATHER_FRACTION`` of the side.
    """
    base, donor = np.asarray(base, np.float32), np.asarray(donor, np.float32)
    regions = np.broadcast_to(np.asarray(regions) > 0, base.shape).astype(np.float32)
    sigma = FEATHER_FRACTION * base.shape[-1]
    weight = np.clip(gaussian_filter(regions, sigma=(0, sigma, sigma)), 0.0, 1.0)
    return np.clip(np.rint(base * (1 - weight) + donor * weight), 0, 255).astype(np.uint8)


def swap(context: ProbeContext, rows: np.ndarray, called: np.ndarray, base: np.ndarray,
         donor: np.ndarray, relation: np.ndarray, regions: np.ndarray) -> Pairs:
    """Build and predict the composites of the (``base``, ``donor``) pairs of ``rows``.

    Args:
        context: The probe context (its ``predict_images`` service predicts).
        rows: The called dataset rows.
        called: Their target calls.
        base, donor: Pair positions into ``rows``.
        relation: Each pair's ``"within"`` / ``"across"``.
        regions: ``(n, S, S)`` or ``(S, S)``: what each composite takes from its donor.
    """
    dataset = context.dataset
    base_rows, donor_rows = rows[base], rows[donor]
    images = composites(dataset.images[base_rows], dataset.images[donor_rows], regions)
    # The composite keeps the base's anatomy, so the base's mask is its lung mask.
    probabilities = context.predict_images(context.audited, images, _masks(dataset, base_rows))
    return Pairs(base=base, donor=donor, relation=relation, base_called=called[base],
                 composite_called=_called(context, probabilities), images=images)


def share_rows(follows: np.ndarray, groups: dict[str, np.ndarray],
               subset: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One table row per distinct combination of ``groups`` values among the pairs (of
    ``subset``): their number (``pairs``) and the share of ``follows``, with its Wilson
    interval."""
    subset = np.ones(len(follows), bool) if subset is None else subset
    keys = list(zip(*(np.asarray(values)[subset] for values in groups.values()), strict=True))
    table = []
    for key in sorted(set(keys)):
        part = subset.copy()
        for values, value in zip(groups.values(), key, strict=True):
            part &= np.asarray(values) == value
        hits, n = int(follows[part].sum()), int(part.sum())
        low, high = wilson_ci(hits, n)
        table.append({**dict(zip(groups, (str(v) for v in key), strict=True)), "pairs": n,
                      "share": hits / n, "ci_low": low, "ci_high": high})
    return table


def shares_figure(title: str, table: list[dict[str, Any]], label: Callable[[dict], str],
                  ylabel: str, reference: float | None = None,
                  reference_label: str | None = None) -> dict[str, Any]:
    """The bars figure spec of a ``share_rows`` table: one bar per row, named by
    ``label(row)``, with its Wilson interval; ``reference`` (and its label) a dashed line."""
    spec = {"kind": "bars", "title": title, "labels": [label(row) for row in table],
            "values": [row["share"] for row in table],
            "ci_low": [row["ci_low"] for row in table],
            "ci_high": [row["ci_high"] for row in table],
            "reference": reference, "ylabel": ylabel}
    if reference_label is not None:
        spec["reference_label"] = reference_label
    return spec


def call_word(context: ProbeContext, called: bool) -> str:
    """How a caption names a target call: ``COVID`` or ``not COVID``."""
    word = class_word(context.params.target_class)
    return word if called else f"not {word}"


def gallery(context: ProbeContext, rows: np.ndarray, called: np.ndarray, pairs: Pairs,
            follows: np.ndarray, regions: np.ndarray, names: tuple[str, str, str],
            outcome: tuple[str, str], candidates: np.ndarray
            ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """A few composites with their two source images: the ``"composites"`` figure spec and
    its artifact (both empty when no pair is a candidate).

    Args:
        names: Panel names of the donor, the base and the composite (e.g. ``("lungs",
            "surround", "composite")``).
        outcome: Caption words when a composite follows ``(the shortcut, the lungs)``.
        candidates: Boolean over the pairs: which may be shown (spread evenly over the
            draw order, which holds one direction of swap and then the other; up to half
            following each way).
    """
    half = GALLERY_PAIRS // 2
    chosen = np.concatenate([_spread(np.flatnonzero(candidates & follows), half),
                             _spread(np.flatnonzero(candidates & ~follows), half)])
    if len(chosen) < GALLERY_PAIRS:  # fill from the other outcome
        rest = np.setdiff1d(np.flatnonzero(candidates), chosen)
        chosen = np.concatenate([chosen, _spread(rest, GALLERY_PAIRS - len(chosen))])
    if len(chosen) == 0:
        return {}, {}
    dataset = context.dataset
    images, masks, captions = [], [], []
    for pair in np.sort(chosen):
        donor_row, base_row = rows[pairs.donor[pair]], rows[pairs.base[pair]]
        region = (np.broadcast_to(regions, (len(pairs.base), *regions.shape[-2:]))[pair] > 0)
        images += [dataset.images[donor_row], dataset.images[base_row], pairs.images[pair]]
        masks += [region.astype(np.uint8)] * 3
        for name, row, call in ((names[0], donor_row, called[pairs.donor[pair]]),
                                (names[1], base_row, called[pairs.base[pair]])):
            captions.append(f"{name}: {dataset.classes[dataset.labels[row]]}, "
                            f"{dataset.sources[row]} -> {call_word(context, call)}")
        captions.append(f"{names[2]} -> {call_word(context, pairs.composite_called[pair])}: "
                        f"follows the {outcome[0] if follows[pair] else outcome[1]}")
    spec = {"kind": "image_gallery", "artifact": "composites", "columns": 3,
            "title": f"Composites of {context.audited}: {names[0]} donor, {names[1]} donor, "
                     "composite (outline: the swapped region)",
            "captions": captions,
            "caption": (f"Each row is one pair: the image that gives the {names[0]}, the image "
                        f"that gives the {names[1]}, then their composite. Under each image: "
                        "its true label and source, and after the arrow the model's call; "
                        "under the composite, its call and whether that call follows the "
                        f"{outcome[0]} or the {outcome[1]}. The yellow outline is the swapped "
                        "region.")}
    return ({"composites": spec},
            {"composites": {"images": np.stack(images), "masks": np.stack(masks)}})


def _spread(positions: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` of ``positions``, evenly spaced from first to last."""
    if len(positions) <= count:
        return positions
    return positions[np.linspace(0, len(positions) - 1, count).round().astype(int)]
