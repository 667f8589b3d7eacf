"""The API's routes, one module per resource; each ``router(service, authorize)`` answers its paths."""
