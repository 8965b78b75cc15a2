"""VisualMixer (Xu et al., NDSS 2024): VFE, window bounds, the VFE-guided mixer and ST-Adam."""

from .bounds import (
    output_bias_pass_probability,
    shuffled_window_vfe_moments,
    window_size_lower_bound,
    window_size_upper_bound,
)
from .mixer import MixResult, VisualMixer, assign_windows, check_window_bounds, visual_mix
from .st_adam import STAdam
from .vfe import DEFAULT_REGION_SIZE, image_vfe, region_vfe

__all__ = [
    "DEFAULT_REGION_SIZE",
    "MixResult",
    "STAdam",
    "VisualMixer",
    "assign_windows",
    "check_window_bounds",
    "image_vfe",
    "output_bias_pass_probability",
    "region_vfe",
    "shuffled_window_vfe_moments",
    "visual_mix",
    "window_size_lower_bound",
    "window_size_upper_bound",
]
