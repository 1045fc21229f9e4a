"""Closed sets of values that several methods' params share (dadf/checks.py: Hydra refuses any other value)."""
from __future__ import annotations

from dadf.checks import choices

# The autoencoder-GAN nets of AMA and the simplex AE (dadf/nets/gan.py): auto picks by the data's shape.
Arch = choices("Arch", ("auto", "resnet32", "grey28", "mlp"))
# A critic's Lipschitz control: spectral norm, gradient penalty or both; auto: sn for resnet32, gp otherwise.
Lipschitz = choices("Lipschitz", ("auto", "sn", "gp", "sn+gp"))
