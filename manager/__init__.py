"""The swarm manager: Raft-replicated store, control API, orchestrators, allocator,
scheduler, dispatcher, CA and registry. Arrives with issue 4; nothing here yet."""
