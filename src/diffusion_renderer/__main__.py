"""``python -m diffusion_renderer`` runs the command-line interface."""

import sys

from diffusion_renderer.cli.main import main

sys.exit(main())
