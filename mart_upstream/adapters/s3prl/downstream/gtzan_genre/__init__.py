"""GTZAN genre classification on the fault-filtered split."""
