"""Cover-song identification: datasets, zero-shot evaluation of any encoder, metrics."""
