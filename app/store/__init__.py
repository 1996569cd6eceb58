"""Redis: the client, the shared pipeline of a turn, every key, the generations' stream entries
and their scripts."""
