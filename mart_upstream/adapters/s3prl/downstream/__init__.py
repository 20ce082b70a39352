"""Music downstreams for s3prl's run_downstream: ``mtat_tagging``, ``gtzan_genre``, ``fma_genre``,
``irmas_instrument``, ``msd_tagging``, ``cover_song``."""
