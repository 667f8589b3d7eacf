"""Service: gathering facts, deciding, recording, reports, several clusters, the refresher, metrics and
settings."""
