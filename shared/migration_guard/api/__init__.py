"""Api: the FastAPI application of the service."""
