"""The pipeline stages: package, publish, deploy (phoenix), retire."""
