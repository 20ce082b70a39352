"""Music downstreams for s3prl's run_downstream: ``mtat_tagging``, ``gtzan_genre``, ``cover_song``."""
