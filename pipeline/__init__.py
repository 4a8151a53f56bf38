"""What ties the `ofasys` library to the pipeline: params, sources and the demo data, tracking."""
