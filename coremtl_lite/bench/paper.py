"""Numbers reported in the CORE-MTL paper (ICML 2026), transcribed for side-by-side display.

Every value here is **the paper's**, on the paper's datasets (NYUv2 for the ablation, CelebA for the
scalability study) and hardware; none comes from this package. Display them only with that label.
Tables whose numbers were lost in the paper's text extraction (Tables 1-2, 6, 8-15) are not copied.
"""

from __future__ import annotations

LABEL = "paper (CORE-MTL, ICML 2026)"

#: Table 3: feature-swap robustness, (Δz_s, Δz_p, ratio Δz_p / Δz_s)
TABLE3_ROBUSTNESS = {"intra-domain": (0.1997, 0.4158, 2.08), "cross-domain": (0.2889, 0.9466, 3.28)}

#: Table 4: CelebA, (number of tasks, method) -> (seconds per epoch, average accuracy %)
TABLE4_SCALABILITY = {
    (10, "ew"): (86, 88.52),
    (10, "pcgrad"): (690, 88.32),
    (10, "stch"): (89, 88.39),
    (10, "core_mtl"): (297, 89.39),
    (20, "ew"): (91, 91.55),
    (20, "pcgrad"): (1396, 91.23),
    (20, "stch"): (88, 90.81),
    (20, "core_mtl"): (297, 91.80),
    (30, "ew"): (92, 91.40),
    (30, "pcgrad"): (1950, 91.41),
    (30, "stch"): (91, 90.80),
    (30, "core_mtl"): (297, 91.76),
    (40, "ew"): (94, 91.52),
    (40, "pcgrad"): (2806, 91.34),
    (40, "stch"): (97, 91.01),
    (40, "core_mtl"): (300, 91.77),
}

#: Table 5: component ablation on NYUv2: seg mIoU, pix acc, depth abs, rel, normal mean, median (deg),
#: within 11.25 / 22.5 / 30 degrees
TABLE5_COLUMNS = (
    "mIoU",
    "pix_acc",
    "abs_err",
    "rel_err",
    "mean",
    "median",
    "within_11.25",
    "within_22.5",
    "within_30",
)
TABLE5_ABLATION = {
    "vanilla": (0.5249, 0.7417, 0.4418, 0.1881, 25.6201, 19.8490, 0.2926, 0.5521, 0.6776),
    "ds": (0.5352, 0.7527, 0.3813, 0.1622, 23.2973, 16.9788, 0.3517, 0.6117, 0.7230),
    "ds+grounding": (0.5424, 0.7546, 0.3827, 0.1611, 23.2189, 16.9394, 0.3517, 0.6130, 0.7267),
    "ds+grounding+cka": (0.5547, 0.7630, 0.3876, 0.1636, 23.9179, 18.5226, 0.3165, 0.5814, 0.7041),
    "full": (0.5693, 0.7759, 0.3544, 0.1466, 22.4927, 16.8337, 0.3501, 0.6196, 0.7360),
}
