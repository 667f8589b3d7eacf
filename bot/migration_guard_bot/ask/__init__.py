"""One module per newer question (evacuation, HA risks, which nodes run a type, overrides) and the
resolution of what the parser cannot know (a VM's name, a node's spelling) through the service's
answers. ``migration_guard_bot.answers.answer`` dispatches to them."""
