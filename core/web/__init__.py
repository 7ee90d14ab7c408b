"""The HTTP edge: FastAPI app factory, one router per resource, problem responses."""
