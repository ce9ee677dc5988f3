"""onnxviz: see what a convolutional network has learned, from its ONNX file alone."""

__version__ = "0.1.0"

from .errors import OnnxvizError
from .features import FeatureMap, feature_maps, iter_feature_maps, layer_stats
from .images import (
    PRESETS,
    Preprocess,
    choose_preprocess,
    from_model_input,
    load_pixels,
    to_model_input,
    to_model_input_adjoint,
)
from .model import Model, ModelSummary, default_image_path, default_model_path, load_model
from .render import render_feature_maps, render_filters, render_grid
from .rewrite import expose_tensors
from .weights import LayerWeights, layer_weights, weights_image

__all__ = [
    "PRESETS",
    "FeatureMap",
    "LayerWeights",
    "Model",
    "ModelSummary",
    "OnnxvizError",
    "Preprocess",
    "__version__",
    "choose_preprocess",
    "default_image_path",
    "default_model_path",
    "expose_tensors",
    "feature_maps",
    "from_model_input",
    "iter_feature_maps",
    "layer_stats",
    "layer_weights",
    "load_model",
    "load_pixels",
    "render_feature_maps",
    "render_filters",
    "render_grid",
    "to_model_input",
    "to_model_input_adjoint",
    "weights_image",
]
