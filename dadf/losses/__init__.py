"""Reusable losses: perceptual distances on VGG19 features, WGAN-GP critic losses, loss-weight policies, simplex
interpolation weights."""
from dadf.losses.gan import WGANCritic, critic_loss, gradient_penalty, pair_gradient_penalty
from dadf.losses.perceptual import PerceptualLoss, VGGFeatures, channel_stats
from dadf.losses.simplex import partner_indices, simplex_weights
from dadf.losses.weighting import GradNormWeights

__all__ = ["GradNormWeights", "WGANCritic", "PerceptualLoss", "VGGFeatures", "channel_stats", "critic_loss",
           "gradient_penalty", "pair_gradient_penalty", "partner_indices", "simplex_weights"]
