"""Pipeline fixtures: ``stack_pipeline`` runs a test once per shipped model stack (arcface, sface)."""

from __future__ import annotations

import pytest

from facefind.pipeline import FacePipeline, PipelineConfig
from facefind.pipeline.models import STACKS


@pytest.fixture(scope="session", params=sorted(STACKS))
def stack_pipeline(request, pipeline: FacePipeline) -> FacePipeline:
    """The pipeline of each model stack, loaded once per session (arcface shares the default one)."""
    return pipeline if request.param == pipeline.stack.name else FacePipeline(PipelineConfig(model=request.param))
