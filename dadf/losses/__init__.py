"""Reusable losses: perceptual distances on VGG19 features, WGAN-GP critic losses, loss-weight policies."""
from dadf.losses.gan import WGANCritic, critic_loss, gradient_penalty
from dadf.losses.perceptual import PerceptualLoss, VGGFeatures, channel_stats
from dadf.losses.weighting import GradNormWeights

__all__ = ["GradNormWeights", "WGANCritic", "PerceptualLoss", "VGGFeatures", "channel_stats", "critic_loss", "gradient_penalty"]
