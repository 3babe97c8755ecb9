"""Provider presets: one JSON file per platform."""
