"""The face pipeline: decode -> detect -> align -> assess quality -> embed.

Each stage is its own module; :class:`FacePipeline` strings them together and
is the only thing the rest of facefind needs from this package.
"""

from facefind.pipeline.core import DetectedFace, FacePipeline, PipelineConfig

__all__ = ["DetectedFace", "FacePipeline", "PipelineConfig"]
