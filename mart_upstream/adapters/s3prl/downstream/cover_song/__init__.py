"""Cover-song identification: a head trained on training works, retrieval scored on dev/test works."""
