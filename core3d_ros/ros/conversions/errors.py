"""Errors of message conversion: ConversionError (a ValueError) and one subclass per message
family whose content is checked."""
from __future__ import annotations


class ConversionError(ValueError):
    """A message that cannot be converted."""


class ImageError(ConversionError):
    """A sensor_msgs/Image whose encoding, size or buffer is unusable."""


class CameraInfoError(ConversionError):
    """A sensor_msgs/CameraInfo without a usable intrinsic matrix."""


class PoseError(ConversionError):
    """A pose or transform with a zero/NaN quaternion or a non-finite position."""
