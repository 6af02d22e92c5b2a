"""The model seam: one interface, three implementations (live, replay, scripted fake)."""

from pipeline.model.base import CallKey, ChatModel, ModelReply, ModelRequest
from pipeline.model.fake import ScriptedModel
from pipeline.model.replay import RecordingModel, ReplayModel

__all__ = ["CallKey", "ChatModel", "ModelReply", "ModelRequest", "RecordingModel", "ReplayModel",
           "ScriptedModel"]  # fmt: skip
