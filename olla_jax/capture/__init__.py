"""Capture: compile a jitted step and keep everything XLA says about its memory."""

from olla_jax.capture.record import Capture, CaptureError, MemoryFigures, capture

__all__ = ["Capture", "CaptureError", "MemoryFigures", "capture"]
