"""Official checkpoints: safe loading, key maps, strict verification, conversion, download."""
