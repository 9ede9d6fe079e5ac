"""What is judged: the paper's claims (:data:`CLAIMS`) and this study's own questions (:data:`STUDY_QUESTIONS`), each
as (text, where it is made, the test metric compared, the run(s) claimed better, the run(s) claimed worse). A side of
several runs is judged by its best run; the prior's and the floors' row names stand for maps that learn nothing.
:mod:`avaga_lib.reporting.claims` judges them; the remedies' and arms' questions come from the run registry.
"""

from __future__ import annotations

from typing import Any

from avaga_lib import study
from avaga_lib.reporting.results import PRIOR_CENTER
from avaga_lib.study import BASELINES

__all__ = ["CLAIMS", "STUDY_QUESTIONS"]

# (claim text, source in the paper, metric, better, worse)
CLAIMS: tuple[tuple[str, str, str, Any, Any], ...] = (
    ("AVAGA-R_w localizes better than AVAGA-R_u (IoU)", "Table 2/4, Sec. 4", "iou", "AVAGA-R_w", "AVAGA-R_u"),
    ("AVAGA-R_w classifies better than AVAGA-R_u (mean accuracy)", "Table 3/5", "mean_accuracy", "AVAGA-R_w",
     "AVAGA-R_u"),
    ("AVAGA-R_u localizes better than the best baseline (IoU)", "Table 2/4, abstract", "iou", "AVAGA-R_u", BASELINES),
    ("AVAGA-R_u classifies better than the best baseline (mean accuracy)", "Table 3/5, abstract", "mean_accuracy",
     "AVAGA-R_u", BASELINES),
    ("AVAGA-R_w localizes better than the best baseline (IoU)", "Table 2/4, abstract", "iou", "AVAGA-R_w", BASELINES),
    ("AVAGA-R_w classifies better than the best baseline (mean accuracy)", "Table 3/5, abstract", "mean_accuracy",
     "AVAGA-R_w", BASELINES),
    ("AVAGA-R_u beats AVAGA-D_u (IoU)", "Table 2", "iou", "AVAGA-R_u", "AVAGA-D_u"),
    ("AVAGA-R_w beats AVAGA-D_w (IoU)", "Table 2", "iou", "AVAGA-R_w", "AVAGA-D_w"),
    ("The guided attention loss improves localization", "Table 6/8 cols 1 vs 3", "iou", "AVAGA-R_u",
     "AVAGA-R_u-noattn"),
    ("The convolutional latent beats a flat latent", "Table 6/8 cols 2 vs 3", "iou", "AVAGA-R_u", "AVAGA-R_u-flat"),
    ("Adversarial reconstruction improves weak localization", "Table 6/8 cols 4 vs 6", "iou", "AVAGA-R_w",
     "AVAGA-R_w-noadv"),
    ("SGB improves weak localization", "Table 6/8 cols 5 vs 6", "iou", "AVAGA-R_w", "AVAGA-R_w-noSGB"),
)


# Questions of this study (issue 13), not claims of the paper: does a map beat position, does a remedy help?
_REMEDY_QUESTIONS = tuple(
    (f"{r.name} localizes better than the literal {r.remedy_of} (pixel AUROC)", "issue 13, remedy", "pixel_auroc",
     r.name, r.remedy_of) for r in study.RUNS if r.remedy_of
)
# Issue 21: each arm (one confound of the recipe changed) against the random-init recipe, the prior and the baselines:
# does pretraining / dropping the adversarial term change the ordering AVAGA vs baselines vs position?
_ARM_QUESTIONS = tuple(q for r in study.RUNS if r.arm_of for q in (
    (f"{r.name} localizes better than the random-init {r.arm_of} (pixel AUROC)", "issue 21, arm", "pixel_auroc",
     r.name, r.arm_of),
    (f"{r.name}'s attention map beats the centred-Gaussian position prior (pixel AUROC)", "issue 21, arm",
     "pixel_auroc", r.name, PRIOR_CENTER),
    (f"{r.name} localizes better than the best baseline (pixel AUROC)", "issue 21, arm", "pixel_auroc", r.name,
     BASELINES),
))
_AVAGA_U_MAPS = ("AVAGA-R_u", *study.remedies_of("AVAGA-R_u"))  # the recipe and its remedies: the best one is judged
STUDY_QUESTIONS: tuple[tuple[str, str, str, Any, Any], ...] = (
    ("AVAGA-R_u's attention map beats the centred-Gaussian position prior (pixel AUROC)", "issue 13, position",
     "pixel_auroc", "AVAGA-R_u", PRIOR_CENTER),
    ("The best unsupervised AVAGA attention map (the recipe or a remedy) beats the centred-Gaussian prior "
     "(pixel AUROC)", "issue 13, position", "pixel_auroc", _AVAGA_U_MAPS, PRIOR_CENTER),
    ("The best baseline's residual map beats the centred-Gaussian position prior (pixel AUROC)",
     "issue 13, position", "pixel_auroc", BASELINES, PRIOR_CENTER),
    ("AVAGA-R_u localizes better than the best baseline (pixel AUROC, threshold-free)", "issue 13, PN 11",
     "pixel_auroc", "AVAGA-R_u", BASELINES),
    ("AVAGA-R_u detects better than the best baseline (image AUROC, threshold-free)", "issue 13, PN 11",
     "image_auroc", "AVAGA-R_u", BASELINES),
    *_REMEDY_QUESTIONS,
    *_ARM_QUESTIONS,
)
