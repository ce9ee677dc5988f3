"""onnxviz: see what a convolutional network has learned, from its ONNX file alone."""

__version__ = "0.1.0"

from .errors import OnnxvizError
from .model import Model, ModelSummary, default_image_path, default_model_path, load_model
from .render import render_filters, render_grid
from .weights import LayerWeights, layer_weights, weights_image

__all__ = [
    "LayerWeights",
    "Model",
    "ModelSummary",
    "OnnxvizError",
    "__version__",
    "default_image_path",
    "default_model_path",
    "layer_weights",
    "load_model",
    "render_filters",
    "render_grid",
    "weights_image",
]
