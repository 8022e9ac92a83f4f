"""Model backends behind small Protocols: captioners (image -> text) and text embedders (text -> vector)."""
