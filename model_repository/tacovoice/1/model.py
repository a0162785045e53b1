"""Triton Python-backend model of one voice (addon): the logic is melstream.serving.voice_model.VoiceModel.

Copied into model_repository/<voice>/1/model.py by `melstream build-repo`; Triton creates the class with no
arguments, so it hands the stub's pb_utils module to the package's class here.
"""

import triton_python_backend_utils as pb_utils

from melstream.serving.voice_model import VoiceModel


class TritonPythonModel(VoiceModel):
    def __init__(self):
        super().__init__(pb_utils)
