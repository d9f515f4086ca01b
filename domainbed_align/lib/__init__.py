"""Small shared helpers with no torch dependency."""
