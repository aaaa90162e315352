"""DigitPairs: the Multi-MNIST analogue of MT-CRL (appendix D.1), from scikit-learn's bundled digits.

A left and a right handwritten digit (``sklearn.datasets.load_digits``: 1,797 8x8 images, no
download) side by side; two 10-way tasks ``left`` and ``right``. As in MT-CRL, the 100 label pairs are
shuffled and split 3:1:1 into train / val / test, so label co-occurrences seen in training never recur
in validation or test (a label-label confounder shift, C_dist^MTL). The digit images are split the same
way, so no image is shared between splits.

Nuisance factors: the digit (foreground) colour and the background colour. In training they are
spurious shortcuts -- with probability ``spurious_prob`` the foreground hue encodes the left label
and the background hue the right label; at test time they are random.

Causal structure, for MT-CRL's spurious score. The generative factors of an image are the two 8x8
digit images (``left_digit``, ``right_digit``) and the two colours (``foreground_rgb``,
``background_rgb``); only a task's own digit is causal for it (``causal_factors``), the other digit
and both colours are not. The colours fill the same pixels as the digits, so no pixel mask can
separate them: :meth:`DigitPairs.factor_gradients` maps an input gradient to the gradient with
respect to every factor (the chain rule through the image formation), and the score is computed on
the factors, as MT-CRL §2.2 defines Grad(F). ``causal_mask[task]`` (the task's half of the image) is
kept for saliency figures; on pixels it would count the colour shortcut as causal.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from coremtl_lite.data import _random
from coremtl_lite.data._common import index_tensor, shift_split
from coremtl_lite.data.scenes import hsv_to_rgb

SPLITS = ("train", "val", "test", "test_id")
_DIGITS: dict[str, torch.Tensor] = {}


def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    if not _DIGITS:
        from sklearn.datasets import load_digits

        d = load_digits()
        _DIGITS["images"] = torch.tensor(d.images, dtype=torch.float32) / 16.0
        _DIGITS["labels"] = torch.tensor(d.target, dtype=torch.long)
    return _DIGITS["images"], _DIGITS["labels"]


def label_pair_split(seed: int) -> dict[str, list[tuple[int, int]]]:
    """The 100 (left, right) label pairs shuffled by ``seed`` and split 60 / 20 / 20 (MT-CRL's 3:1:1)."""
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(100, generator=g).tolist()
    pairs = [(i // 10, i % 10) for i in order]
    return {"train": pairs[:60], "val": pairs[60:80], "test": pairs[80:]}


class DigitPairs:
    """Two-digit images with a label-pair shift and label-correlated colours in training.

    Args:
        split: ``train``; ``val`` and ``test`` (unseen label pairs, random colours); ``test_id``
            (training label pairs and colour correlations, held-out digit images).
        size: image height; the width is ``2 * size``.
        length: number of samples (each drawn deterministically from ``(seed, split, index)``).
        seed: seed of the pair split, the image split and the sampling.
        spurious_prob: in ``train``/``test_id``, the probability that the colours encode the labels.
    """

    task_info = {
        "left": {"kind": "classification", "num_classes": 10},
        "right": {"kind": "classification", "num_classes": 10},
    }
    #: the generative factors that cause each task's label (see the module docstring)
    causal_factors = {"left": ("left_digit",), "right": ("right_digit",)}
    factor_names = ("left_digit", "right_digit", "foreground_rgb", "background_rgb")

    def __init__(
        self,
        split: str = "train",
        size: int = 32,
        length: int = 2048,
        seed: int = 0,
        spurious_prob: float = 0.9,
    ):
        if split not in SPLITS:
            raise ValueError(f"DigitPairs split must be one of {SPLITS}, got {split!r}")
        if not 0.0 <= spurious_prob <= 1.0:
            raise ValueError(f"spurious_prob must be in [0, 1], got {spurious_prob}")
        self.split, self.size, self.length, self.seed = split, int(size), int(length), int(seed)
        self.spurious_prob = spurious_prob if split in ("train", "test_id") else 0.0
        self.task_info = dict(type(self).task_info)
        images, labels = _load_digits()
        pairs = label_pair_split(seed)
        self.pairs = pairs["train" if split == "test_id" else split]
        # split the digit images 3:1:1 (test_id uses the test images)
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(int(seed) + 1))
        n_tr, n_va = int(0.6 * len(labels)), int(0.8 * len(labels))
        part = {"train": perm[:n_tr], "val": perm[n_tr:n_va], "test": perm[n_va:], "test_id": perm[n_va:]}[
            split
        ]
        self.image_ids = [part[labels[part] == c] for c in range(10)]  # per class, global ids
        self._images = images
        half = torch.zeros(self.size, 2 * self.size, dtype=torch.bool)
        half[:, : self.size] = True
        self.causal_mask = {"left": half, "right": ~half}

    @staticmethod
    def domain_split(domain: str) -> str:
        """Evaluation domain -> split: ``source`` = ``test_id`` (seen pairs), ``target`` = ``test``."""
        return shift_split("DigitPairs", domain)

    def __len__(self) -> int:
        return self.length

    def get_batch(self, indices) -> dict[str, Any]:
        """The collated samples ``indices``: ``image`` (B,3,size,2*size), ``left``, ``right``, ``factors``."""
        idx = index_tensor("DigitPairs", indices, self.length)
        u = _random.uniform(_random.keys(self.seed, _random.stream_id("digits:" + self.split), idx), 12)
        pair = (u[:, 0] * len(self.pairs)).long().clamp_max(len(self.pairs) - 1)
        pairs = torch.tensor(self.pairs)[pair]
        left, right = pairs[:, 0], pairs[:, 1]
        ids = []
        for side, lab in ((1, left), (2, right)):
            counts = torch.tensor([len(self.image_ids[c]) for c in range(10)])[lab]
            j = (u[:, side] * counts).long().clamp_max(counts - 1)
            ids.append(torch.stack([self.image_ids[c][k] for c, k in zip(lab.tolist(), j.tolist())]))
        spurious = u[:, 3] < self.spurious_prob
        fg_hue = torch.where(spurious, left.float() / 10 + 0.02 * (u[:, 4] - 0.5), u[:, 5])
        bg_hue = torch.where(spurious, right.float() / 10 + 0.02 * (u[:, 6] - 0.5), u[:, 7])
        fg = hsv_to_rgb(fg_hue % 1.0, 0.6 + 0.3 * u[:, 8], 0.85 + 0.15 * u[:, 9])
        bg = hsv_to_rgb(bg_hue % 1.0, 0.4 + 0.3 * u[:, 10], 0.15 + 0.25 * u[:, 11])
        image = self.compose(self._images[ids[0]], self._images[ids[1]], fg, bg)
        return {
            "image": image,
            "left": left,
            "right": right,
            "factors": {
                "semantic": {
                    "left_label": left,
                    "right_label": right,
                    "left_image": ids[0],
                    "right_image": ids[1],
                },
                "residual": {"foreground_rgb": fg, "background_rgb": bg, "spurious": spurious},
            },
        }

    def compose(
        self, left_digit: torch.Tensor, right_digit: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor
    ) -> torch.Tensor:
        """The image (B, 3, size, 2 size) from its generative factors: two (B, 8, 8) digit images in [0, 1]
        (the ink), and the (B, 3) foreground and background colours."""
        digits = torch.cat([left_digit, right_digit], dim=2)[:, None]  # (B,1,8,16)
        ink = F.interpolate(digits, size=(self.size, 2 * self.size), mode="bilinear", align_corners=False)
        return (bg[:, :, None, None] * (1 - ink) + fg[:, :, None, None] * ink).clamp(0, 1)

    def factor_gradients(self, batch: dict[str, Any], input_grad: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{factor: (B, n) d out / d factor}`` for a (signed) input gradient ``input_grad = d out / d image``.

        The chain rule through :meth:`compose`: the factors are the batch's own digit images and colours
        (``batch["factors"]``), so this is exact. Factor dimensions: 64 per digit, 3 per colour.
        """
        image = batch["image"]
        if tuple(input_grad.shape) != tuple(image.shape):
            raise ValueError(
                f"DigitPairs.factor_gradients: input_grad has shape {tuple(input_grad.shape)}, the "
                f"batch's images {tuple(image.shape)}"
            )
        sem, res = batch["factors"]["semantic"], batch["factors"]["residual"]
        dev = input_grad.device
        leaves = [
            self._images[sem["left_image"].cpu()].to(dev),
            self._images[sem["right_image"].cpu()].to(dev),
            res["foreground_rgb"].to(dev),
            res["background_rgb"].to(dev),
        ]
        leaves = [t.detach().clone().float().requires_grad_(True) for t in leaves]
        with torch.enable_grad():
            grads = torch.autograd.grad(self.compose(*leaves), leaves, grad_outputs=input_grad.float())
        return {name: g.reshape(g.shape[0], -1) for name, g in zip(self.factor_names, grads)}

    def __getitem__(self, index: int) -> dict[str, Any]:
        b = self.get_batch([int(index)])
        return {
            k: ({kk: {a: t[0] for a, t in vv.items()} for kk, vv in v.items()} if k == "factors" else v[0])
            for k, v in b.items()
        }


__all__ = ["DigitPairs", "label_pair_split"]
