"""chaosext.core.walk: every object of a JSON document, in document order (Envoy config dumps, journals)."""
from __future__ import annotations

from chaosext.core.walk import iter_dicts


def test_every_object_is_found_depth_first_in_document_order() -> None:
    doc = {"a": 1, "b": [{"id": 1, "c": {"id": 2}}, [{"id": 3}]], "d": {"id": 4}}
    ids = [d["id"] for d in iter_dicts(doc) if "id" in d]
    assert ids == [1, 2, 3, 4]
    assert next(iter_dicts(doc)) is doc
    assert list(iter_dicts([1, "x", None])) == []
