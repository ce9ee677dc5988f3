"""onnxviz: see what a convolutional network has learned, from its ONNX file alone.

The public API: every function returns data (numpy arrays, PIL images, dataclasses) and
never prints; the `onnxviz` command is a thin layer over it.
"""

__version__ = "0.1.0"

from . import objectives
from .errors import OnnxvizError
from .examples import ExamplesResult, examples, examples_image
from .features import FeatureMap, feature_maps, iter_feature_maps, layer_stats
from .grad import GradientFunction, GradientWarning, gradient_function, input_gradient
from .grad.check import GradCheckResult, gradcheck
from .images import (
    PRESETS,
    Preprocess,
    choose_preprocess,
    from_model_input,
    load_pixels,
    to_model_input,
    to_model_input_adjoint,
)
from .maximize import Result, Step, evaluate, iter_maximize, maximize
from .model import (
    Model,
    ModelSummary,
    default_image_path,
    default_images_dir,
    default_model_path,
    load_model,
)
from .render import render_feature_maps, render_filters, render_grid
from .report import ReportResult, report
from .rewrite import expose_tensors
from .weights import LayerWeights, layer_weights, weights_image

__all__ = [
    "PRESETS",
    "ExamplesResult",
    "FeatureMap",
    "GradCheckResult",
    "GradientFunction",
    "GradientWarning",
    "LayerWeights",
    "Model",
    "ModelSummary",
    "OnnxvizError",
    "Preprocess",
    "ReportResult",
    "Result",
    "Step",
    "__version__",
    "choose_preprocess",
    "default_image_path",
    "default_images_dir",
    "default_model_path",
    "evaluate",
    "examples",
    "examples_image",
    "expose_tensors",
    "feature_maps",
    "from_model_input",
    "gradcheck",
    "gradient_function",
    "input_gradient",
    "iter_feature_maps",
    "iter_maximize",
    "layer_stats",
    "layer_weights",
    "load_model",
    "load_pixels",
    "maximize",
    "objectives",
    "render_feature_maps",
    "render_filters",
    "render_grid",
    "report",
    "to_model_input",
    "to_model_input_adjoint",
    "weights_image",
]
