"""The `pyswarm` commands, one module per area (containers, images, volumes, system).

`cli.main` imports a module here only when one of its commands runs. In each module
the click commands come first and only parse and validate; each calls one function
below them, which talks to the daemon through `cli.client` and prints.
"""
