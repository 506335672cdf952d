"""Simulation: the procedural scene renderer (exact depth, sky at +inf) and the sample camera node
that publishes hazy frames from it (or from image folders and videos) for demos and tests."""
