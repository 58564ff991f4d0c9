"""Applications built on the pipelines: relighting (more to come: material editing, object insertion)."""
