"""Recipes for the hosts pyswarm runs on: base images, the demo, and (later) the lab."""
