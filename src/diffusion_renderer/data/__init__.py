"""Synthetic training and evaluation data: seeded procedural scenes path-traced with Mitsuba 3.

* :mod:`~diffusion_renderer.data.scenes`: JSON-serialisable scene specs and the seeded sampler (no Mitsuba).
* :mod:`~diffusion_renderer.data.mitsuba_render`: path tracing and exact G-buffers (imports Mitsuba lazily).
* :mod:`~diffusion_renderer.data.storage`, :mod:`~diffusion_renderer.data.make_data`: on-disk layout, CLI driver.
"""
