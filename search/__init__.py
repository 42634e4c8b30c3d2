"""Rollouts: backends behind one interface, the agent turn, the JOSH tree (a conversation at beam 1) and many
rollouts at once. It yields warehouse rows; `factory/` writes them."""
