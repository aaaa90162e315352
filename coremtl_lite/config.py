"""Typed, validated run configuration with profiles.

A :class:`Config` is a tree of small dataclasses (data, model, loss, optim, train). A *profile*
fills sensible defaults for a situation:

* ``ci``    -- seconds; used by CI and ``pytest --nbval`` (``COREMTL_PROFILE=ci``).
* ``cpu``   -- minutes on a 2-core laptop, results that mean something (default without a GPU).
* ``gpu``   -- a single GPU, larger images and models (default when CUDA is available).
* ``paper`` -- the paper's settings (Appendix F / Table 7) on the real datasets.

Overrides are ``section.key=value`` strings (``optim.lr=1e-3``); an unknown key is an error that
suggests the nearest valid key. Notebooks call :func:`active_profile` to read the profile from the
environment variable ``COREMTL_PROFILE``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

PROFILES = ("ci", "cpu", "gpu", "paper")
PROFILE_ENV = "COREMTL_PROFILE"


class ConfigError(ValueError):
    """A configuration value or key is invalid."""


@dataclass
class DataConfig:
    """Which data to train and evaluate on."""

    dataset: str = "shaded_scenes"  # shaded_scenes | shaded_attributes | confounded_scenes | digit_pairs | multisem | nyuv2 | ...
    root: str | None = None  # folder of a real dataset (prepared by data_scripts/)
    image_size: int = 64  # square side for synthetic data; real sets use their own resolution
    tasks: tuple[str, ...] = ("segmentation", "depth", "normal")
    num_attributes: int = 10  # ShadedAttributes / CelebA: how many binary attributes
    train_size: int = 2048
    val_size: int = 256
    test_size: int = 256
    source_domain: str = "source"
    eval_domains: tuple[str, ...] = ("source", "target")
    # ShadedScenes' dials (coremtl_lite.data.scenes.priors). rho: the spurious-correlation strength of the source
    # (the probability that a surface keeps its class-keyed colour; the target has 0). severity: how far the
    # `target` domain moves every residual range from the source's (0) to the far end (1). The defaults put a
    # vanilla model's target score clearly between the trivial predictor and its source score (tutorial 01b)
    rho: float = 0.5
    severity: float = 0.5
    batch_size: int = 32
    num_workers: int = 0
    augment: bool = False
    # label-label confounders (MT-CRL §2.1): multisem and confounded_scenes
    num_tasks: int = 2  # multisem: the number of tasks T (MT-CRL Table 5 grows it from 2 to 8)
    confounded_shapes: tuple[str, ...] = ("cone", "box")  # confounded_scenes: the tasks has_<A>, has_<B>
    m_train: float = 0.9  # label agreement P(Y_a = Y_b) in training and the source test split
    m_val: float = 0.5  # ... in the validation split (MT-CRL's second environment)
    m_test: float = 0.1  # ... in the shifted test split (evaluation domain "target")
    train_on_val: bool = False  # also train on the validation split (MT-CRL §4's protocol for its baselines)

    def validate(self) -> None:
        _positive(
            self,
            "image_size",
            "train_size",
            "val_size",
            "test_size",
            "batch_size",
            "num_attributes",
            "num_tasks",
        )
        for name in ("m_train", "m_val", "m_test", "rho", "severity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"data.{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.confounded_shapes) != 2:
            raise ConfigError(f"data.confounded_shapes must name two shapes, got {self.confounded_shapes}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if not self.tasks:
            raise ConfigError("data.tasks must name at least one task")


#: the values of ``model.architecture``, the one setting that chooses the network
ARCHITECTURES = ("dual_stream", "vanilla", "mtan", "mmoe", "mtcrl")

#: keys that no longer exist, and what replaced them (an override or a saved config naming one is an error)
RETIRED_KEYS = {
    "model.dual_stream": "model.dual_stream was replaced by model.architecture=dual_stream|vanilla "
    "(true -> dual_stream, false -> vanilla)"
}


@dataclass
class ModelConfig:
    """The network: encoder, the two streams (paper §3.1) and the grounding decoder (§3.2)."""

    architecture: str = "dual_stream"  # dual_stream (CORE-MTL) | vanilla (shared encoder, the baselines) | mtan | mmoe | mtcrl
    encoder: str = "lite"  # lite | resnet50 (dilated, output stride 8) | resnet18
    width: int = 32  # base channel width of the lite encoder
    semantic_channels: int = 64  # C_s of z_s = P_s(F)
    residual_channels: int = 32  # C_p of z_p = GAP(P_p(F))
    leaky_heads: bool = False  # True: the released code's heads that also read projected backbone features
    grounding: str = "hard"  # hard (physics decoder, Eq. 13-14) | soft (generic decoder, Eq. 15) | none
    head_channels: int = 32
    pretrained: bool = True  # ImageNet weights for ResNet encoders, when available offline
    # the MT-CRL model (architecture=mtcrl; Hu et al. 2022 §3.1): K modules of D dimensions
    num_modules: int = 8  # K (MT-CRL appendix F); 1 = a shared-bottom model
    module_dim: int = 16  # D, the output size of each module
    module_width: int = 8  # channels (CNN modules) or a quarter of the hidden units (MLP modules) per module

    def validate(self) -> None:
        _choice(self, "architecture", ARCHITECTURES)
        _choice(self, "encoder", ("lite", "resnet50", "resnet18"))
        _choice(self, "grounding", ("hard", "soft", "none"))
        _positive(
            self,
            "width",
            "semantic_channels",
            "residual_channels",
            "head_channels",
            "num_modules",
            "module_dim",
            "module_width",
        )
        if self.leaky_heads and self.architecture != "dual_stream":
            raise ConfigError(
                f"model.leaky_heads needs model.architecture=dual_stream, got {self.architecture!r}"
            )


@dataclass
class LossConfig:
    """Weights of the total objective, Eq. 16, and the staged schedule of the released configs.

    **Schedule, as fractions of the run's optimiser steps** (so a 4-epoch and a 100-epoch run keep the
    same proportions; the released NYUv2 config spends 5 / 10 / 20 of its 100 epochs on these stages):

    * ``decomposition_warmup`` (0.05): stage 0 trains the decomposition only -- L_rec reaches the
      encoder, no task loss does, and the task heads are untouched (no gradient, BatchNorm statistics
      frozen); lambda_ind = 0;
    * ``ind_ramp`` (0.10): lambda_ind then ramps linearly from 0 to ``lambda_ind`` over this fraction;
    * ``cfa_start`` (0.20): CFA may apply from this fraction of the run on, and then only on batches
      where the decoder really reconstructs: its squared error is at most ``cfa_max_rec_ratio`` x that
      of the trivial reconstruction (each image's own mean colour; 0.7 = the decoder explains at least
      30 % of the image's variance around its mean colour). A counterfactual decoded by a
      decoder that cannot beat a flat colour carries no content, and asking z_s(blur) = z_s(x) only
      pulls the encoder away from the tasks.

    **Default weights, calibrated against the task losses.** The task losses are of order 0.1-2 at
    unit weight (cross-entropy, L1 depth, 1 - cos normals). CKA (Eq. 11) and the relative-MSE CFA
    (Eq. 12) are *scale-free*: their gradients do not shrink as they are satisfied, so at weight 1 they
    outweigh the tasks on the encoder for the whole run. The paper's Table 7 keeps the extra terms an
    order of magnitude below the tasks (task weights 10-30 against lambda_ind 0.1-1, lambda_cfa 0.5-1);
    at unit task weights that is ``lambda_ind = lambda_cfa = 0.1``. ``lambda_rec = 1``: the grounding
    L1 lives in linear RGB and is small (~0.02-0.05), so its gradient is already below the tasks'.
    The trainer logs each term's gradient norm on the shared encoder (``train.grad_log_every``), so
    the balance can be checked, not assumed.

    **A bound on each extra term's pull** (``max_term_grad_ratio``, 1.0). Even at these weights CFA's
    gradient on the encoder measured ~4x the tasks' on the cpu profile (a scale-free loss on
    counterfactuals that are still blurry). At every gradient measurement the trainer sets a scale
    s_k = min(1, ratio x ||g_task|| / ||g_k||) for each extra term k and applies it until the next
    measurement (logged as ``grad/<k>_scale``, checkpointed), so no term outweighs the tasks on the
    shared encoder by more than this ratio. 0 disables the cap.

    ``rec_balance="class"`` weights the photometric L1 of L_rec so that every segmentation class counts
    the same (:func:`coremtl_lite.losses.reconstruction.class_balance_weights`): with the plain L1 the
    ground (~86 % of ShadedScenes' pixels) dominates and the region palette collapses to its colour.
    """

    task_weights: dict[str, float] = field(default_factory=dict)  # lambda_t; missing tasks get 1.0
    lambda_rec: float = 1.0
    lambda_ind: float = 0.1
    lambda_cfa: float = 0.1
    cfa_form: str = "consistency"  # consistency: ||z_s(x~) - z_s(x)||^2 (paper) | task: task losses (code)
    cfa_prob: float = 0.5  # probability that a step applies CFA (released config: 0.5)
    decomposition_warmup: float = 0.05  # fraction of the run: stage 0, decomposition only
    ind_ramp: float = 0.10  # fraction of the run over which lambda_ind ramps up after stage 0
    cfa_start: float = 0.20  # fraction of the run from which CFA may apply
    cfa_max_rec_ratio: float = 0.7  # CFA only when MSE(recon) <= this x MSE(each image's mean colour)
    rec_balance: str = "class"  # class: each segmentation class weighs the same in the L1 of L_rec | none
    max_term_grad_ratio: float = 1.0  # cap: an extra term's encoder gradient <= this x the tasks'; 0 = no cap
    perceptual: str = "auto"  # auto (LPIPS if its weights load, else SSIM) | lpips | ssim | none
    perceptual_weight: float = 0.1

    def validate(self) -> None:
        _choice(self, "cfa_form", ("consistency", "task"))
        _choice(self, "rec_balance", ("class", "none"))
        _choice(self, "perceptual", ("auto", "lpips", "ssim", "none"))
        for name in (
            "lambda_rec",
            "lambda_ind",
            "lambda_cfa",
            "perceptual_weight",
            "cfa_max_rec_ratio",
            "max_term_grad_ratio",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("cfa_prob", "decomposition_warmup", "ind_ramp", "cfa_start"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"loss.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay to ``min_lr_ratio`` x lr (Appendix F)."""

    lr: float = 2e-3
    weight_decay: float = 1e-4
    epochs: int = 10
    warmup_epochs: int = 1
    min_lr_ratio: float = 0.01
    grad_clip: float = 10.0  # max global gradient norm; 0 disables clipping

    def validate(self) -> None:
        _positive(self, "lr", "epochs")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.grad_clip < 0:
            raise ConfigError("optim.weight_decay, optim.warmup_epochs and optim.grad_clip must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class TrainConfig:
    """How the one training loop runs: method, seed, device and bookkeeping."""

    method: str = "ew"  # how task losses are balanced: a name from coremtl_lite.methods.available()
    # keyword options of the method, typed by its signature (`coremtl-lite methods` lists them), e.g.
    # {"alpha": 2}, {"solver": "frank_wolfe"}, {"preference": [0.5, 0.5]}; also train.method_options.alpha=2
    method_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:1 | mps
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 with a scaler)
    channels_last: bool = True  # NHWC model and images, on CUDA and on the CPU (faster convolutions)
    compile: bool = False  # torch.compile the model (on the CPU it needs a C++ compiler, else eager)
    out_dir: str = "runs/default"
    checkpoint_every: int = 1  # epochs; 0 disables checkpoints
    eval_every: int = 1  # epochs
    log_every: int = 10  # steps
    grad_log_every: int = 25  # steps between per-term gradient-norm measurements on the encoder; 0: never
    progress: bool = True  # tqdm progress bars
    max_steps_per_epoch: int = 0  # 0: the whole training set each epoch

    def validate(self) -> None:
        if (
            self.checkpoint_every < 0
            or self.eval_every < 0
            or self.max_steps_per_epoch < 0
            or self.grad_log_every < 0
        ):
            raise ConfigError(
                "train.checkpoint_every, eval_every, max_steps_per_epoch and grad_log_every must be >= 0"
            )
        _positive(self, "log_every")


@dataclass
class Config:
    """A whole run. Build one with :func:`get_config`."""

    profile: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> Config:
        if self.profile not in PROFILES:
            raise ConfigError(f"unknown profile {self.profile!r}; choose one of {', '.join(PROFILES)}")
        validate_config(self)  # finite numbers, out_dir (after the sections' own checks below)
        for section in (self.data, self.model, self.loss, self.optim, self.train):
            section.validate()
        unknown = set(self.loss.task_weights) - set(self.data.tasks)
        if unknown:
            raise ConfigError(f"loss.task_weights names tasks not in data.tasks: {sorted(unknown)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        """Rebuild a config from :meth:`to_dict` output (unknown keys are errors)."""
        if not isinstance(raw, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(raw).__name__}")
        sections = [f.name for f in fields(cls) if f.name != "profile"]
        for sec, sub in raw.items():
            if sec == "profile":
                if not isinstance(sub, str):
                    raise ConfigError(f"config key 'profile' must be a string, got {sub!r}")
            elif sec not in sections:
                near = difflib.get_close_matches(sec, sections, n=1)
                raise ConfigError(
                    f"unknown config section {sec!r}"
                    + (f"; did you mean {near[0]!r}?" if near else "")
                    + f" (sections: profile, {', '.join(sections)})"
                )
            elif not isinstance(sub, dict):
                raise ConfigError(
                    f"config section {sec!r} must be a JSON object of keys, got {json.dumps(sub)}"
                )
        cfg = get_config(raw.get("profile", "cpu"))
        overrides = [
            f"{sec}.{k}={json.dumps(v)}"
            for sec, sub in raw.items()
            if isinstance(sub, dict)
            for k, v in sub.items()
        ]
        return apply_overrides(cfg, overrides)


# --------------------------------------------------------------------------------------- profiles
def _profile_ci() -> Config:
    return Config(
        profile="ci",
        data=DataConfig(image_size=32, train_size=64, val_size=32, test_size=32, batch_size=16),
        model=ModelConfig(
            width=16, semantic_channels=32, residual_channels=16, head_channels=16, pretrained=False
        ),
        loss=LossConfig(perceptual="ssim"),
        optim=OptimConfig(epochs=2, warmup_epochs=0),
        train=TrainConfig(progress=False),
    )


def _profile_cpu() -> Config:
    # minutes on a 2-core laptop; 10 epochs x 32 steps: the validation score of both CORE-MTL and the vanilla
    # model flattens over the last three epochs (measured, tutorial 02), where 6 epochs stopped mid-climb
    # perceptual term: 1 - SSIM. LPIPS's AlexNet on 32 px renders is outside the range it was calibrated
    # on and costly on a CPU; its ImageNet weights are often not in the cache offline either (gpu/paper: auto)
    return Config(
        profile="cpu",
        data=DataConfig(train_size=1024, val_size=128, test_size=256),
        loss=LossConfig(perceptual="ssim"),
        optim=OptimConfig(epochs=10),
    )


def _profile_gpu() -> Config:
    return Config(
        profile="gpu",
        data=DataConfig(
            image_size=128, train_size=16384, val_size=1024, test_size=1024, batch_size=64, num_workers=4
        ),
        model=ModelConfig(width=64, semantic_channels=256, residual_channels=128, head_channels=64),
        optim=OptimConfig(lr=1e-3, epochs=40, warmup_epochs=2),
    )


def _profile_paper() -> Config:
    # Appendix F and Table 7, NYUv2 row: batch 16, 100 epochs at 288x384, AdamW 2e-4, wd 1e-4.
    return Config(
        profile="paper",
        data=DataConfig(
            dataset="nyuv2",
            root="data/nyuv2",
            image_size=288,
            batch_size=16,
            num_workers=4,
            augment=True,
            eval_domains=("source",),
        ),
        model=ModelConfig(
            encoder="resnet50", semantic_channels=256, residual_channels=256, head_channels=256
        ),
        loss=LossConfig(
            task_weights={"segmentation": 20.0, "depth": 10.0, "normal": 10.0},
            lambda_ind=1.0,
            lambda_cfa=1.0,
            perceptual="lpips",
        ),
        optim=OptimConfig(lr=2e-4, weight_decay=1e-4, epochs=100, warmup_epochs=5, grad_clip=10.0),
    )


_PROFILE_BUILDERS = {"ci": _profile_ci, "cpu": _profile_cpu, "gpu": _profile_gpu, "paper": _profile_paper}

#: The paper's per-benchmark settings (Appendix F, Table 7), as overrides on the ``paper`` profile.
#: Loss weights are (lambda_seg, lambda_depth, lambda_normal, lambda_ind, lambda_cfa) of Table 7.
PAPER_PRESETS: dict[str, tuple[str, ...]] = {
    "nyuv2": (
        "data.dataset=nyuv2",
        "data.root=data/nyuv2",
        "data.tasks=segmentation,depth,normal",
        "data.batch_size=16",
        "data.eval_domains=source",
        "optim.epochs=100",
        "optim.warmup_epochs=5",
        'loss.task_weights={"segmentation": 20, "depth": 10, "normal": 10}',
        "loss.lambda_ind=1.0",
        "loss.lambda_cfa=1.0",
    ),
    "cityscapes": (
        "data.dataset=cityscapes",
        "data.root=data/cityscapes",
        "data.tasks=segmentation,depth",
        "data.batch_size=32",
        "data.eval_domains=source",
        "optim.epochs=100",
        "optim.warmup_epochs=5",
        "data.augment=true",
        'loss.task_weights={"segmentation": 10, "depth": 20}',
        "loss.lambda_ind=1.0",
        "loss.lambda_cfa=1.0",
    ),
    "gta5_to_cityscapes": (
        "data.dataset=gta5",
        "data.root=data/gta5",
        "data.tasks=segmentation,depth",
        "data.batch_size=32",
        "data.eval_domains=source,target",
        "optim.epochs=100",
        "optim.warmup_epochs=10",
        'loss.task_weights={"segmentation": 30, "depth": 25}',
        "loss.lambda_ind=0.1",
        "loss.lambda_cfa=0.5",
    ),
    "cityscapes_c": (
        "data.dataset=cityscapes",
        "data.root=data/cityscapes",
        "data.tasks=segmentation,depth",
        "data.batch_size=16",
        "optim.epochs=100",
        "optim.warmup_epochs=5",
        "data.eval_domains=source,corrupt:contrast:3,corrupt:defocus_blur:3,corrupt:fog:3,corrupt:gaussian_noise:3",
        'loss.task_weights={"segmentation": 10, "depth": 20}',
        "loss.lambda_ind=1.0",
        "loss.lambda_cfa=1.0",
    ),
    "celeba": (
        "data.dataset=celeba",
        "data.root=data/celeba",
        "data.tasks=attributes",
        "data.num_attributes=40",
        "data.image_size=128",
        "data.batch_size=256",
        "data.eval_domains=source",
        "optim.epochs=50",
        "optim.warmup_epochs=5",
        "model.encoder=resnet18",
        "model.grounding=soft",
        "loss.task_weights={}",
        "loss.lambda_ind=0.5",
        "loss.lambda_cfa=0.0",
    ),
}


def paper_config(benchmark: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The ``paper`` profile with the settings of one of the paper's benchmarks (``PAPER_PRESETS``)."""
    if benchmark not in PAPER_PRESETS:
        raise ConfigError(f"unknown paper benchmark {benchmark!r}; choose one of {', '.join(PAPER_PRESETS)}")
    return get_config("paper", [*PAPER_PRESETS[benchmark], *overrides])


def default_profile() -> str:
    """``gpu`` when CUDA is available, else ``cpu``."""
    try:
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return "cpu"


def active_profile() -> str:
    """The profile named by ``$COREMTL_PROFILE``, else :func:`default_profile`."""
    name = os.environ.get(PROFILE_ENV, "").strip().lower()
    if not name:
        return default_profile()
    if name not in PROFILES:
        raise ConfigError(f"${PROFILE_ENV}={name!r} is not a profile; choose one of {', '.join(PROFILES)}")
    return name


def get_config(profile: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The validated config of ``profile`` (default: :func:`active_profile`) with overrides applied."""
    profile = profile or active_profile()
    if profile not in _PROFILE_BUILDERS:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return apply_overrides(_PROFILE_BUILDERS[profile](), overrides)


# -------------------------------------------------------------------------------------- overrides
def _all_keys(cfg: Config) -> list[str]:
    return [
        f"{s.name}.{f.name}"
        for s in fields(cfg)
        if is_dataclass(getattr(cfg, s.name))
        for f in fields(getattr(cfg, s.name))
    ]


def _coerce(raw: str, annotation: Any, key: str) -> Any:
    """Parse ``raw`` (a CLI string or JSON text) into the type ``annotation`` names."""
    text = raw.strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    ann = str(annotation)
    if ann.startswith("tuple"):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        return tuple(value)
    if ann.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} expects a JSON object, e.g. {key}='{{\"depth\": 2.0}}'")
        if ann == "dict[any]":  # method options: typed later from the method's signature (methods/base.py)
            return dict(value)
        return {str(k): _finite(v, f"{key}[{k!r}]") for k, v in value.items()}
    if ann == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key} expects true/false, got {raw!r}")
    if ann == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{key} expects an integer, got {raw!r}")
        return int(value)
    if ann == "float":
        return _finite(value, key)
    if "None" in ann and (value is None or text.lower() == "none"):
        return None
    if value is None or isinstance(value, (dict, list)):
        raise ConfigError(f"{key} expects a string, got {raw!r}")
    return str(value) if not isinstance(value, str) else value


def _finite(value: Any, key: str) -> float:
    """A finite float, else a :class:`ConfigError` naming ``key`` (JSON's NaN and Infinity included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} expects a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value}")
    return float(value)


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Return a copy of ``cfg`` with ``section.key=value`` overrides applied, then validated."""
    cfg = replace(
        cfg,
        **{
            s.name: dataclasses.replace(getattr(cfg, s.name))
            for s in fields(cfg)
            if is_dataclass(getattr(cfg, s.name))
        },
    )
    valid = _all_keys(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key == "profile":
            raise ConfigError("choose the profile with get_config(profile=...) or --profile, not an override")
        if key in RETIRED_KEYS:
            raise ConfigError(RETIRED_KEYS[key])
        if key not in valid:
            if key.startswith("train.method_options."):  # one option: train.method_options.alpha=2
                name = key.split(".", 2)[2]
                try:
                    value = json.loads(raw)
                except json.JSONDecodeError:
                    value = raw.strip()
                cfg.train.method_options = {**cfg.train.method_options, name: value}
                continue
            near = difflib.get_close_matches(key, valid, n=1)
            if not near:  # a bare or mistyped key name (lr=1): match the part after the section
                by_name = {k.split(".")[-1]: k for k in valid}
                near = [by_name[n] for n in difflib.get_close_matches(key.split(".")[-1], list(by_name), n=1)]
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"unknown config key {key!r}{hint}")
        section_name, name = key.split(".")
        section = getattr(cfg, section_name)
        hints = typing.get_type_hints(type(section))
        setattr(section, name, _coerce(raw, _type_name(hints[name]), key))
    return cfg.validate()


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return "tuple"
    if origin is dict:
        return "dict[any]" if typing.get_args(annotation)[1:] == (Any,) else "dict"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _type_name(args[0]) + " | None"
    return getattr(annotation, "__name__", str(annotation))


def _positive(section: Any, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if value <= 0:
            raise ConfigError(f"{_section_name(section)}.{name} must be > 0, got {value}")


def _choice(section: Any, name: str, options: tuple[str, ...]) -> None:
    value = getattr(section, name)
    if value not in options:
        raise ConfigError(f"{_section_name(section)}.{name}={value!r} is not one of {', '.join(options)}")


def _section_name(section: Any) -> str:
    return type(section).__name__.replace("Config", "").lower()


# ------------------------------------------------------------------------------- whole-config checks
def validate_config(cfg: Config) -> None:
    """Checks across every section that the sections' own ``validate`` do not make.

    Every float field (and every loss weight) is finite, whatever built the config (JSON's ``NaN`` and
    ``Infinity``, or Python); ``train.out_dir`` is a non-empty path; ``train.seed`` is a valid seed.
    """
    for section in fields(cfg):
        sub = getattr(cfg, section.name)
        if not is_dataclass(sub):
            continue
        for f in fields(sub):
            value, key = getattr(sub, f.name), f"{section.name}.{f.name}"
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value}")
            if isinstance(value, dict) and key != "train.method_options":
                for k, v in value.items():
                    if isinstance(v, float) and not math.isfinite(v):
                        raise ConfigError(f"{key}[{k!r}] must be a finite number, got {v}")
    out = cfg.train.out_dir
    if not isinstance(out, str) or not out.strip() or out.strip().lower() in ("none", "null"):
        raise ConfigError(f"train.out_dir must name a folder, got {out!r}")
    if not 0 <= cfg.train.seed < 2**63:  # torch.manual_seed's range
        raise ConfigError(f"train.seed must be an integer in [0, 2**63), got {cfg.train.seed}")
    if not isinstance(cfg.train.method_options, dict):
        raise ConfigError(f"train.method_options must be a JSON object, got {cfg.train.method_options!r}")
