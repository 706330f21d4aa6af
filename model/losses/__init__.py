"""Ranking losses with one signature: ``loss(scores [B,N], labels [B,N], mask [B,N]) -> scalar``."""

from listcon.model.losses.bce import bce_loss
from listcon.model.losses.circle import circle_loss
from listcon.model.losses.cosent import cosent_loss
from listcon.model.losses.triplet import triplet_loss

LOSSES = {"circle": circle_loss, "bce": bce_loss, "triplet": triplet_loss, "cosent": cosent_loss}

__all__ = ["LOSSES", "bce_loss", "circle_loss", "cosent_loss", "triplet_loss"]
