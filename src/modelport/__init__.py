"""modelport: a trained model file becomes a production service, and stays healthy there.

``import modelport`` is light on purpose: no web framework and no ML backend is imported here.
"""

from __future__ import annotations

from modelport.errors import ModelportError
from modelport.signature import Feature, Signature
from modelport.types import Columns, Outputs

__version__ = "0.1.0"

__all__ = [
    "Columns",
    "Feature",
    "ModelportError",
    "Outputs",
    "Signature",
    "__version__",
]
