"""The fault soak: many mixed calls through a fault-injecting proxy (issue 12)."""
