"""MCKD: text-video retrieval with multimodal contrastive knowledge distillation.

Importing the package registers the MCKD classes with `AutoConfig`, `AutoModel` and
`AutoProcessor`, and marks them for `save_pretrained` to write `auto_map`
and copy the code files, so a saved folder loads with `trust_remote_code=True` where this package
is not installed.

Submodules with heavier or optional roles (`losses`, `retrieval`, `encoding`, `objectives`,
`training`, `runner`, `feature_store`, `hub`, `search`, `data_prep`) are not imported here: `from modeling_mckd.losses import ContrastiveLoss`.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_mckd import MCKDConfig
from .modeling_mckd import MCKDModel, MCKDOutput, MCKDPreTrainedModel
from .processing_mckd import MCKDProcessor, MCKDVideoProcessor
from .tokenization import build_word_tokenizer, minilm_path
from .video_io import VideoDecodeError, VideoFileNotFoundError

AutoConfig.register(MCKDConfig.model_type, MCKDConfig, exist_ok=True)
AutoModel.register(MCKDConfig, MCKDModel, exist_ok=True)
AutoProcessor.register(MCKDConfig, MCKDProcessor, exist_ok=True)

MCKDConfig.register_for_auto_class()
MCKDModel.register_for_auto_class("AutoModel")
MCKDProcessor.register_for_auto_class()

__all__ = [
    "MCKDConfig",
    "MCKDModel",
    "MCKDOutput",
    "MCKDPreTrainedModel",
    "MCKDProcessor",
    "MCKDVideoProcessor",
    "VideoDecodeError",
    "VideoFileNotFoundError",
    "build_word_tokenizer",
    "minilm_path",
]
