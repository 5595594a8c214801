"""`pyswarm config`: create, ls, inspect and rm, as docker's (the commands are
`cli.commands.secret`'s, for configs; inspect shows the data base64)."""

from __future__ import annotations

from cli.commands.secret import CONFIG, group

config = group(CONFIG)
