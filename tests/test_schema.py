import json
from pathlib import Path

from facefind.schema import json_schemas

DOC = Path(__file__).resolve().parents[1] / "docs" / "search-result.schema.json"


def test_documented_schema_matches_the_models():
    """Changing a response model without regenerating the documented schema fails here."""
    assert json.loads(DOC.read_text()) == json_schemas(), (
        "regenerate with: python -m facefind.schema > docs/search-result.schema.json (and bump SCHEMA_VERSION if incompatible)"
    )
