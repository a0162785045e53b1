"""Triton Python-backend model of one network of an addon: the logic is melstream.serving.network_model.NetworkModel.

Copied into model_repository/<voice>__<network>/1/model.py by `melstream build-repo`; Triton creates the class
with no arguments, so it hands the stub's pb_utils module to the package's class here.
"""

import triton_python_backend_utils as pb_utils

from melstream.serving.network_model import NetworkModel


class TritonPythonModel(NetworkModel):
    def __init__(self):
        super().__init__(pb_utils)
