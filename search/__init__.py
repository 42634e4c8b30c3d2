"""Rollouts: backends, the agent turn runner, single-branch episodes and (later) the JOSH tree."""
