import orderfleet.models as models


def test_empty_projection_is_pending():
    doc = models.project("o-1", []).to_document()
    assert doc["status"] == "pending"
    assert doc["completeness"] == 0
