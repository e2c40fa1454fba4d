"""Information quantities between a layer's representation T, its input X and the label Y.

Qian et al. (2024, §5) trace, across early pre-training, the mutual information between a
layer's representation T and the input X (it first rises — *fitting* — then falls —
*compression*) and between T and the label Y (it keeps rising). The package estimates those
quantities for one checkpoint from a few hundred sampled statements, with a permutation null
for every number (the turn across checkpoints is tested in :mod:`trustdyn.verdicts`). Its
modules: :mod:`~trustdyn.information.kernels` (input checks, kernel widths, Gram matrices),
:mod:`~trustdyn.information.renyi` (matrix-based Rényi entropy and MI, in bits),
:mod:`~trustdyn.information.hsic` (normalised HSIC score and its width sensitivity),
:mod:`~trustdyn.information.shannon` (KSG cross-check, label entropy, usable information),
and :mod:`~trustdyn.information.grid` (permutation null, half-sample errors, one
checkpoint's grid with undefined estimates marked).
"""

from trustdyn.information.grid import (
    ESTIMATORS,
    PAPER_RIDGE,
    InfoEstimate,
    half_samples,
    information_grid,
    permutation_null,
)
from trustdyn.information.hsic import (
    DEFAULT_RIDGE,
    WidthSensitivity,
    hsic_sensitivity,
    normalised_hsic,
)
from trustdyn.information.kernels import (
    DEFAULT_WIDTH_RULE,
    WIDTH_RULES,
    InformationError,
    gaussian_gram,
    kernel_width,
    label_gram,
)
from trustdyn.information.renyi import (
    DEFAULT_ALPHA,
    renyi_entropy,
    renyi_mutual_information,
)
from trustdyn.information.shannon import (
    ksg_mutual_information,
    label_entropy_bits,
    usable_information_bits,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_RIDGE",
    "DEFAULT_WIDTH_RULE",
    "ESTIMATORS",
    "PAPER_RIDGE",
    "WIDTH_RULES",
    "InfoEstimate",
    "InformationError",
    "WidthSensitivity",
    "gaussian_gram",
    "half_samples",
    "hsic_sensitivity",
    "information_grid",
    "kernel_width",
    "ksg_mutual_information",
    "label_entropy_bits",
    "label_gram",
    "normalised_hsic",
    "permutation_null",
    "renyi_entropy",
    "renyi_mutual_information",
    "usable_information_bits",
]
