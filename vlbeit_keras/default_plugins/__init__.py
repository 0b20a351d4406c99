"""Built-in parts, registered through the plugin hooks like any external plugin."""
