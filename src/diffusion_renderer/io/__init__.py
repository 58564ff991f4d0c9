"""Input/output: atomic writes, images, video, HDR maps, output layout."""
